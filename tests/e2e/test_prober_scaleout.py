"""Prober replicas as processes against real NATS: the catalog is split, each check runs once
per interval, across a replica joining too, a killed replica's share is taken over, and
SIGHUP reloads the catalog."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import nats
import pytest
from aiohttp import web

from deploy.local.supervisor import LogSink, ServiceProcess, service_env
from shared.events import PROBE_RUN_SUBJECT, ProbeRunReply
from tests.polling import eventually

REPO = Path(__file__).resolve().parents[2]
INTERVAL = 2.0
SERVICES = 16


class CountingTarget:
    """Loopback server recording when each path (one per service) was requested."""

    def __init__(self) -> None:
        self.hits: dict[str, list[float]] = defaultdict(list)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits[request.path.strip("/")].append(time.time())
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()


@pytest.fixture
async def target() -> AsyncIterator[CountingTarget]:
    t = CountingTarget()
    await t.start()
    yield t
    await t.stop()


def catalog(base_url: str, ids: list[str], interval: float = INTERVAL) -> str:
    lines = ["services:"]
    for service_id in ids:
        lines += [
            f"  - id: {service_id}",
            f"    interval: {interval}s",
            "    timeout: 1s",
            f"    endpoints: [{{name: h, url: '{base_url}/{service_id}'}}]",
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def probers(nats_url: str, tmp_path: Path) -> Iterator[Callable[[int], list[ServiceProcess]]]:
    """Start N prober processes sharing one catalog file (written by the test first)."""
    sink = LogSink(tmp_path / "probers.log")
    sink.keep_lines = True
    started: list[ServiceProcess] = []

    def start(count: int) -> list[ServiceProcess]:
        env = service_env(
            os.environ,
            NATS_URL=nats_url,
            SERVICES_FILE=str(tmp_path / "services.yaml"),
            OPS_PORT="0",
            REGION="e2e",
            LOG_LEVEL="info",
            PROBER_HEARTBEAT_SECONDS="0.25",
            PROBER_MEMBER_TTL_SECONDS="1.5",
        )
        env.pop("PROBER_ID", None)  # each process gets its own hostname-pid id
        batch = [ServiceProcess("prober", env=env, sink=sink, cwd=REPO) for _ in range(count)]
        for p in batch:
            p.start()
        started.extend(batch)
        return batch

    start.sink = sink  # type: ignore[attr-defined]
    yield start
    for p in started:
        p.stop()
    sink.close()


def lines(probers: Callable[[int], list[ServiceProcess]]) -> list[str]:
    return list(probers.sink.lines)  # type: ignore[attr-defined]


async def _value(value: object) -> object:
    return value


async def _checks_by_prober(nats_url: str, *, since: float, until: float) -> dict[str, set[str]]:
    """Which services each prober published checks of, started in [since, until)."""

    from shared.events import CHECK_SUBJECTS, CHECKS_STREAM, CheckCompleted

    owners: dict[str, set[str]] = defaultdict(set)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(CHECKS_STREAM)).state.messages
        sub = await js.pull_subscribe(CHECK_SUBJECTS, stream=CHECKS_STREAM)
        seen = 0
        while seen < total:
            for msg in await sub.fetch(min(256, total - seen), timeout=5):
                seen += 1
                check = CheckCompleted.model_validate_json(msg.data)
                started = check.started_at.timestamp()
                if check.trigger == "scheduled" and since <= started < until:
                    owners[check.prober_id].add(check.service_id)
    finally:
        await nc.close()
    return dict(owners)


def spacing(hits: list[float], start: float, end: float) -> list[float]:
    inside = [t for t in hits if start <= t < end]
    return [b - a for a, b in itertools.pairwise(inside)]


@pytest.mark.timeout(90)
async def test_replicas_split_the_catalog_hand_over_to_a_newcomer_and_take_over_a_killed_ones_share(
    target: CountingTarget,
    probers: Callable[[int], list[ServiceProcess]],
    nats_url: str,
    tmp_path: Path,
) -> None:
    ids = [f"s{i:02d}" for i in range(SERVICES)]
    (tmp_path / "services.yaml").write_text(catalog(target.base_url, ids))
    first, second = probers(2)

    def both_see_two() -> bool:
        seen = [line for line in lines(probers) if "replicas changed members=2" in line]
        return len(seen) >= 2

    await eventually(lambda: _value(both_see_two()), timeout=30, what="two replicas see each other")
    settled = time.time() + INTERVAL
    await asyncio.sleep(INTERVAL + 3 * INTERVAL)
    window_end = time.time()

    # Every service exactly once per interval while both run: no doubles, no gaps.
    for service_id in ids:
        gaps = spacing(target.hits[service_id], settled, window_end)
        assert len(gaps) >= 2, (service_id, target.hits[service_id])
        assert all(0.75 * INTERVAL < g < 1.25 * INTERVAL for g in gaps), (service_id, gaps)
    # The work really is split: the published checks come from both processes, and no
    # service is checked by both while both run.
    owners = await _checks_by_prober(nats_url, since=settled, until=window_end)
    assert len(owners) == 2, owners
    assert not set(owners[min(owners)]) & set(owners[max(owners)]), owners

    # Manual checks are answered once (queue group), whichever replica takes them.
    nc = await nats.connect(nats_url)
    try:
        before = len(target.hits["s00"])
        reply = await nc.request(PROBE_RUN_SUBJECT, json.dumps({"serviceId": "s00"}).encode(), 10)
        assert len(ProbeRunReply.model_validate_json(reply.data).results) == 1
    finally:
        await nc.close()
    assert len(target.hits["s00"]) - before in (1, 2)  # the manual call, plus maybe its turn

    # A third replica joins (scale-up, rolling deploy): its share changes hands at the
    # instant all three agree on, so no turn is run twice or skipped across the join.
    joining = time.time()
    probers(1)

    def all_see_three() -> bool:
        return len([line for line in lines(probers) if "replicas changed members=3" in line]) >= 3

    await eventually(lambda: _value(all_see_three()), timeout=30, what="three replicas")
    await asyncio.sleep(4 * INTERVAL)
    joined_end = time.time()
    for service_id in ids:
        if service_id == "s00":
            continue  # its manual check above is an extra request by design
        gaps = spacing(target.hits[service_id], joining, joined_end)
        assert len(gaps) >= 3, (service_id, target.hits[service_id])
        assert all(0.75 * INTERVAL < g < 1.25 * INTERVAL for g in gaps), (service_id, gaps)
    owners = await _checks_by_prober(nats_url, since=joined_end - 2 * INTERVAL, until=joined_end)
    assert len(owners) == 3, owners  # the newcomer really took a share

    # SIGKILL one replica: within two intervals every service is checked again.
    killed_at = time.time()
    await asyncio.to_thread(first.kill)
    await asyncio.sleep(2 * INTERVAL + 3 * INTERVAL)
    now = time.time()
    for service_id in ids:
        after = [t for t in target.hits[service_id] if t > killed_at]
        assert after and after[0] - killed_at <= 2 * INTERVAL, (service_id, after[:2])
        gaps = spacing(target.hits[service_id], killed_at + 2 * INTERVAL, now)
        assert all(0.75 * INTERVAL < g < 1.25 * INTERVAL for g in gaps), (service_id, gaps)
    assert second.poll() is None
    assert not [line for line in lines(probers) if line.startswith("ERROR")]


@pytest.mark.timeout(60)
async def test_sighup_reloads_the_catalog(
    target: CountingTarget, probers: Callable[[int], list[ServiceProcess]], tmp_path: Path
) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(catalog(target.base_url, ["one"], interval=0.2))
    (prober,) = probers(1)
    await eventually(lambda: _value(len(target.hits["one"])), until=lambda n: n >= 2)
    path.write_text(catalog(target.base_url, ["one", "two"], interval=0.2))
    prober.signal(signal.SIGHUP)
    await eventually(lambda: _value(len(target.hits["two"])), until=lambda n: n >= 2, timeout=10)
    reloads = [line for line in lines(probers) if "catalog reloaded" in line]
    assert len(reloads) == 1 and "reason=signal" in reloads[0] and "added=two" in reloads[0]
    assert prober.poll() is None
