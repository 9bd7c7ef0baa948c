"""Loopback HTTP targets for tests: servers whose replies follow a schedule the test controls.

    async with FlakyTarget(fail_every=4) as target:    # requests 4, 8, 12, ... get 500
        ...check target.url...
        assert target.requests == 12 and target.failures == 3

    async with Target(lambda n: Reply(status=200, delay=0.5 if n == 2 else 0)) as target:
        ...                                              # the 2nd request is slow

    target.behaviour = lambda n: 503                    # switch the schedule at any time

A behaviour is called with the 1-based request number and returns a `Reply` or just a status
code. Every path and method is answered the same way; `target.url` is `<base>/health`.
Each served request is appended to `target.served` (number, status, delay, path, method,
request body and content type).
`url` and `base_url` work once started (the port is chosen by the OS).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web


@dataclass(frozen=True)
class Reply:
    """How the target answers one request: status, a delay before answering, body, headers."""

    status: int = 200
    delay: float = 0.0
    body: str = "ok"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Served:
    """A request the target answered (or is answering, when it has a delay)."""

    number: int
    status: int
    delay: float
    path: str
    method: str = "GET"
    body: bytes = b""
    content_type: str = ""
    cookie: str = ""  # the Cookie header the client sent


Behaviour = Callable[[int], Reply | int]


def always(status: int = 200, delay: float = 0.0) -> Behaviour:
    """A behaviour answering every request the same way."""
    return lambda _: Reply(status=status, delay=delay)


class Target:
    """An aiohttp server on 127.0.0.1 (any free port) replying as `behaviour` says."""

    def __init__(
        self, behaviour: Behaviour | None = None, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.behaviour: Behaviour = behaviour or always(200)
        self.served: list[Served] = []
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def requests(self) -> int:
        """How many requests arrived so far."""
        return len(self.served)

    @property
    def failures(self) -> int:
        """How many requests were answered with a status of 400 or more."""
        return sum(1 for s in self.served if s.status >= 400)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("target not started")
        return self._port

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>` (https when started with an SSL context)."""
        scheme = "https" if self._ssl else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The URL to monitor: `<base_url>/health`."""
        return f"{self.base_url}/health"

    async def _handle(self, request: web.Request) -> web.Response:
        number = len(self.served) + 1
        reply = self.behaviour(number)
        if isinstance(reply, int):
            reply = Reply(status=reply)
        body = await request.read()
        self.served.append(
            Served(
                number,
                reply.status,
                reply.delay,
                request.path,
                request.method,
                body,
                request.content_type,
                request.headers.get("Cookie", ""),
            )
        )
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        return web.Response(status=reply.status, text=reply.body, headers=dict(reply.headers))

    async def start(self) -> Target:
        """Start listening; returns self."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A short shutdown timeout: slow replies still pending must not hold up the test.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        server = site._server
        assert server is not None
        self._port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        """Stop listening; later requests are refused."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Target:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class FlakyTarget(Target):
    """Fails every `fail_every`-th request (numbers N, 2N, ...) with `fail_status`."""

    def __init__(
        self,
        fail_every: int,
        *,
        fail_status: int = 500,
        ok_status: int = 200,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if fail_every < 1:
            raise ValueError("fail_every must be at least 1")
        self.fail_every = fail_every
        super().__init__(
            lambda n: fail_status if n % fail_every == 0 else ok_status, ssl_context=ssl_context
        )
