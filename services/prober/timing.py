"""Per-phase timings of one HTTP call, measured around aiohttp without its tracing signals.

aiohttp's `TraceConfig` would report every phase, but a session with one fires a dozen
signals per request, ~10 % of a check's CPU at 1,700 checks/s. The phases are measured
instead where they happen, into a `Phases` object held in a context variable (set by the
task making the call; aiohttp connects and resolves on its behalf in the same context):
`TimedResolver` times a name resolution, `TimedConnector` the opening of a new connection,
and the transport (services.prober.transport) calls `response_started` when the status line
and headers are in. The meaning of each field (all milliseconds, like curl's -w):

    dnsMs      name resolution, when it happened (null: cached, an IP literal, or reused)
    connectMs  opening a new connection: TCP connect plus, for https, the TLS handshake
               (aiohttp does not separate the two); null when a kept-alive one was reused
    ttfbMs     from the start of the call until the status line and headers were read
               (curl's time_starttransfer); includes waiting for a pooled connection
    reused     true when a kept-alive connection was reused

For https the server certificate's expiry (`notAfter`) is read from the connection as well.
"""

from __future__ import annotations

import socket
import ssl
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.resolver import DefaultResolver
from aiohttp.tracing import Trace


@dataclass(slots=True)
class Phases:
    """What was measured during one call; `start` is a perf_counter instant."""

    start: float
    dns_ms: float | None = None
    connect_ms: float | None = None
    ttfb_ms: float | None = None
    reused: bool | None = None
    cert_not_after: datetime | None = None


_current: ContextVar[Phases | None] = ContextVar("prober_phases", default=None)


def begin() -> Phases:
    """Start collecting phases for the call the current task is about to make."""
    phases = Phases(start=time.perf_counter())
    _current.set(phases)
    return phases


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000


def response_started(response: aiohttp.ClientResponse) -> None:
    """Record time to first byte, reuse and the certificate once headers are in."""
    if (p := _current.get()) is None:
        return
    p.ttfb_ms = _ms(p.start)
    if p.reused is None:  # no new connection was opened for this call
        p.reused = True
    connection = response.connection
    # A small body is read with the headers and the connection already went back to the
    # pool; the response still holds its protocol (private, so read defensively).
    protocol = (
        connection.protocol if connection is not None else getattr(response, "_protocol", None)
    )
    transport = getattr(protocol, "transport", None)
    if transport is None:
        return
    ssl_object = transport.get_extra_info("ssl_object")
    if isinstance(ssl_object, ssl.SSLObject):
        # Only a verified certificate is decoded; an unverified one has no trustworthy date.
        not_after = (ssl_object.getpeercert() or {}).get("notAfter")
        if isinstance(not_after, str):
            p.cert_not_after = datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), UTC)


class TimedResolver(AbstractResolver):
    """A resolver that times each lookup; the connector calls it only on a DNS-cache miss."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        start = time.perf_counter()
        try:
            return await self._inner.resolve(host, port, family)
        finally:
            if (p := _current.get()) is not None:
                p.dns_ms = _ms(start)

    async def close(self) -> None:
        await self._inner.close()


class TimedConnector(aiohttp.TCPConnector):
    """A TCPConnector that times the opening of each new connection (DNS excluded)."""

    async def _create_connection(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's signature)
    ) -> ResponseHandler:
        # aiohttp's hook for exactly this step (private, but stable since aiohttp 3.0);
        # tests/integration/test_prober_checks_http.py fails if it stops being called.
        p = _current.get()
        start = time.perf_counter()
        if p is not None:
            p.reused = False
        protocol = await super()._create_connection(req, traces, timeout)
        if p is not None:
            p.connect_ms = _ms(start) - (p.dns_ms or 0.0)
        return protocol
