"""Runs the api: uvicorn on API_HOST:API_PORT until SIGTERM/SIGINT, then a graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine, Iterator
from typing import Any

import uvicorn
from nats.aio.client import Client as NatsClient

from services.api.app import create_app
from services.api.context import Clock, utc_now
from services.api.settings import ApiSettings, load_api_settings
from services.api.store import MetricsStore
from shared.logs import get_log, setup_logging
from shared.settings import Settings, load_settings

log = get_log(__name__)

GRACEFUL_SHUTDOWN_SECONDS = 10


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: whoever runs it decides when it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ApiServer:
    """The api on a real socket, startable in-process (tests use port 0)."""

    def __init__(
        self,
        *,
        settings: Settings,
        api_settings: ApiSettings | None = None,
        store: MetricsStore | None = None,
        nats: NatsClient | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.app = create_app(
            settings=settings, api_settings=api_settings, store=store, nats=nats, clock=clock
        )
        self.port = settings.api_port
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The base URL on loopback."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start serving; returns once the socket listens."""
        config = uvicorn.Config(
            self.app,
            host=self.settings.api_host,
            port=self.settings.api_port,
            lifespan="on",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(), name="api-uvicorn")
        while not self._server.started:
            if self._task.done():
                await self._task
                raise RuntimeError("the api stopped during start; see the log")
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        log.info("api_listening", host=self.settings.api_host, port=self.port)

    async def stop(self) -> None:
        """Finish in-flight requests, close the pool and NATS, stop listening."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server = self._task = None

    async def wait(self) -> None:
        """Return when the server stops on its own."""
        if self._task is not None:
            await asyncio.shield(self._task)


async def run(settings: Settings, api_settings: ApiSettings) -> None:
    """Serve until SIGTERM or SIGINT."""
    server = ApiServer(settings=settings, api_settings=api_settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    stopped = asyncio.create_task(stop.wait())
    finished = asyncio.create_task(server.wait())
    await asyncio.wait({stopped, finished}, return_when=asyncio.FIRST_COMPLETED)
    for task in (stopped, finished):
        task.cancel()
    log.info("api_stopping")
    await server.stop()


def main() -> None:
    """Entry point of `python -m services.api`."""
    settings = load_settings("api")
    api_settings = load_api_settings()
    setup_logging("api", settings.log_level)
    _run_loop(run(settings, api_settings))


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when installed (the event loop and sockets in C), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
