"""The four services as separate processes against the session's real NATS and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from deploy.local.embedded import free_port
from deploy.local.supervisor import SERVICES, LogSink, ServiceProcess, service_env, stop_all
from tests.polling import eventually

REPO = Path(__file__).resolve().parents[2]


class Stack:
    """Running services of one test, with their API base URL and combined log."""

    def __init__(self, *, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.sink = LogSink(log_path)
        self.sink.keep_lines = True
        self.api_url = f"http://127.0.0.1:{env['API_PORT']}"
        self.processes: dict[str, ServiceProcess] = {}

    def start(self, name: str) -> ServiceProcess:
        p = ServiceProcess(name, env=service_env(self.env), sink=self.sink, cwd=REPO)
        p.start()
        self.processes[name] = p
        return p

    async def stop(self, name: str) -> int | None:
        """Stop one service, keeping this event loop (and the targets in it) responsive."""
        return await asyncio.to_thread(self.processes[name].stop)

    def stop_all(self) -> None:
        stop_all(list(self.processes.values()))
        self.sink.close()

    async def wait_api(self, timeout: float = 60) -> None:
        """Until the api answers /health (it starts in about a second)."""

        async def up() -> bool:
            try:
                return (await api_get(self, "/health")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(up, timeout=timeout, what="the api answering /health")

    def errors(self) -> list[str]:
        return [line for line in self.sink.lines if line.startswith("ERROR")]


@pytest.fixture
async def make_stack(
    db_url: str, nats_url: str, tmp_path: Path
) -> AsyncIterator[Callable[[str], Stack]]:
    """Start the services with a catalog file written by the test."""
    stacks: list[Stack] = []

    def _make(catalog_yaml: str) -> Stack:
        catalog = tmp_path / "services.yaml"
        catalog.write_text(catalog_yaml)
        env = {k: v for k, v in os.environ.items() if k not in ("API_TOKEN",)}
        env.update(
            DATABASE_URL=db_url,
            NATS_URL=nats_url,
            SERVICES_FILE=str(catalog),
            API_PORT=str(free_port()),
            API_HOST="127.0.0.1",
            OPS_PORT="0",
            REGION="e2e",
            LOG_LEVEL="info",
        )
        stack = Stack(env=env, log_path=tmp_path / "watch-server.log")
        for name in SERVICES:
            stack.start(name)
        stacks.append(stack)
        return stack

    yield _make
    for stack in stacks:
        stack.stop_all()


async def api_get(stack: Stack, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as client:
        return await client.get(path)


class ScheduledTarget:
    """A loopback HTTP server: on path /flaky every `fail_every`-th request answers 500;
    /steady always answers 200. It records what it answered, per UTC day."""

    def __init__(self, fail_every: int) -> None:
        self.fail_every = fail_every
        self.served: dict[str, Counter[tuple[str, int]]] = {"flaky": Counter(), "steady": Counter()}
        self._n = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _flaky(self, _: web.Request) -> web.Response:
        self._n += 1
        status = 500 if self._n % self.fail_every == 0 else 200
        self.served["flaky"][(datetime.now(UTC).date().isoformat(), status)] += 1
        return web.json_response({"n": self._n}, status=status)

    async def _steady(self, _: web.Request) -> web.Response:
        self.served["steady"][(datetime.now(UTC).date().isoformat(), 200)] += 1
        return web.json_response({"ok": True})

    def total(self, name: str, status: int | None = None) -> int:
        return sum(c for (_, s), c in self.served[name].items() if status is None or s == status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/flaky", self._flaky)
        app.router.add_get("/steady", self._steady)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()


@pytest.fixture
async def target() -> AsyncIterator[ScheduledTarget]:
    t = ScheduledTarget(fail_every=4)
    await t.start()
    yield t
    await t.stop()


def catalog(url: str) -> str:
    return f"""
services:
  - id: e2e-flaky
    name: Flaky service
    interval: 200ms
    timeout: 2s
    slaTarget: 99.9
    endpoints:
      - name: flaky
        url: {url}/flaky
        expectedStatus: [200]
  - id: e2e-steady
    name: Steady service
    interval: 200ms
    timeout: 2s
    endpoints:
      - name: steady
        url: {url}/steady
        latencyThresholdMs: 5000
"""
