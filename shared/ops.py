"""The operations endpoints every service exposes: /healthz, /readyz and Prometheus /metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

ReadyCheck = Callable[[], Awaitable[dict[str, object]]]


class OpsServer:
    """A small aiohttp server for Kubernetes probes and scraping.

    `ready` returns a dict with a boolean "ready" plus details; /readyz answers 503 while
    it is false. /healthz answers 200 as long as the process serves requests.
    """

    def __init__(
        self,
        *,
        service: str,
        host: str,
        port: int,
        ready: ReadyCheck,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.service, self.host, self.port = service, host, port
        self._ready = ready
        self._registry = registry
        self._runner: web.AppRunner | None = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": self.service})

    async def _readyz(self, _: web.Request) -> web.Response:
        state = await self._ready()
        return web.json_response(state, status=200 if state.get("ready") else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:  # tests ask for any free port
            server = site._server
            assert server is not None and server.sockets  # type: ignore[attr-defined]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
