"""Per-phase timings of one HTTP call, read from aiohttp's tracing signals.

The httpx-over-aiohttp transport hides aiohttp's response, so the phases are collected by an
`aiohttp.TraceConfig` into a `Phases` object held in a context variable: aiohttp runs the
trace callbacks in the task making the request, which is the task that set the variable.
The meaning of each field (all milliseconds from the start of the call, like curl's -w):

    dnsMs      name resolution, when it happened (null: cached, an IP literal, or reused)
    connectMs  opening a new connection: TCP connect plus, for https, the TLS handshake
               (aiohttp does not separate the two); null when a kept-alive one was reused
    ttfbMs     from the start of the call until the status line and headers were read
               (curl's time_starttransfer); includes waiting for a pooled connection
    reused     true when a kept-alive connection was reused

For https the server certificate's expiry (`notAfter`) is read from the connection as well.
"""

from __future__ import annotations

import ssl
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import aiohttp


@dataclass(slots=True)
class Phases:
    """What the trace saw during one call; times are perf_counter seconds."""

    start: float
    dns_start: float | None = None
    dns_ms: float | None = None
    connect_start: float | None = None
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


async def _dns_start(_: Any, __: SimpleNamespace, ___: Any) -> None:
    if (p := _current.get()) is not None:
        p.dns_start = time.perf_counter()


async def _dns_end(_: Any, __: SimpleNamespace, ___: Any) -> None:
    if (p := _current.get()) is not None and p.dns_start is not None:
        p.dns_ms = _ms(p.dns_start)


async def _connect_start(_: Any, __: SimpleNamespace, ___: Any) -> None:
    if (p := _current.get()) is not None:
        p.connect_start = time.perf_counter()
        p.reused = False


async def _connect_end(_: Any, __: SimpleNamespace, ___: Any) -> None:
    if (p := _current.get()) is not None and p.connect_start is not None:
        p.connect_ms = _ms(p.connect_start) - (p.dns_ms or 0.0)


async def _reused(_: Any, __: SimpleNamespace, ___: Any) -> None:
    if (p := _current.get()) is not None:
        p.reused = True


async def _request_end(_: Any, __: SimpleNamespace, params: Any) -> None:
    if (p := _current.get()) is None:
        return
    p.ttfb_ms = _ms(p.start)
    response = params.response
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


def trace_config() -> aiohttp.TraceConfig:
    """A TraceConfig that fills the current task's `Phases`."""
    config = aiohttp.TraceConfig()
    config.on_dns_resolvehost_start.append(_dns_start)
    config.on_dns_resolvehost_end.append(_dns_end)
    config.on_connection_create_start.append(_connect_start)
    config.on_connection_create_end.append(_connect_end)
    config.on_connection_reuseconn.append(_reused)
    config.on_request_end.append(_request_end)
    return config
