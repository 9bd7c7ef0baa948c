"""One check of one service: call its endpoints concurrently and classify what went wrong.

Failures are data, never exceptions. What a call raises maps to an `errorType`:

    timeout      the whole call, or one phase of it, took longer than the service's timeout
    dns          the host name did not resolve
    tls          certificate rejected or TLS handshake failed
    connection   refused, reset or closed before a response
    http_status  a response came, with a status the endpoint does not expect
    assertion    reserved for body/JSON conditions
    other        anything else (bad URL, unsupported protocol, ...)
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import aiohttp
import httpx

from services.prober.catalog import Endpoint, Service, status_matches
from shared.events import CheckCompleted, CheckStatus, EndpointResult, ErrorType, Trigger
from shared.settings import Settings

MAX_ERROR_MESSAGE = 300


async def run_check(
    service: Service,
    *,
    client: httpx.AsyncClient,
    settings: Settings,
    trigger: Trigger = "scheduled",
    scheduled_at: datetime | None = None,
) -> CheckCompleted:
    """Call every endpoint of `service` at once and build the `CheckCompleted` event."""
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(call_endpoint(e, service=service, client=client) for e in service.endpoints)
    )
    return CheckCompleted(
        check_id=uuid.uuid4(),
        service_id=service.id,
        region=settings.region,
        prober_id=settings.prober_id,
        trigger=trigger,
        scheduled_at=scheduled_at or started_at,
        started_at=started_at,
        duration_ms=(time.perf_counter() - t0) * 1000,
        status=check_status(results),
        endpoints=list(results),
    )


async def call_endpoint(
    endpoint: Endpoint, *, service: Service, client: httpx.AsyncClient
) -> EndpointResult:
    """One HTTP call, timed, with its outcome classified; never raises (except cancellation)."""
    timeout = service.timeout_seconds
    status_code: int | None = None
    error_type: ErrorType | None = None
    message: str | None = None
    t0 = time.perf_counter()
    try:
        # httpx's timeout is per phase; this bounds the whole call, a slow-dripping body included.
        async with asyncio.timeout(timeout):
            response = await client.request(
                endpoint.method,
                endpoint.url,
                headers=dict(endpoint.headers),
                content=endpoint.body,
                json=endpoint.json_body,
                timeout=timeout,
            )
        status_code = response.status_code
        if not status_matches(status_code, endpoint.expected_status):
            error_type = "http_status"
            message = f"status {status_code} not in expected {', '.join(endpoint.expected_status)}"
    except Exception as exc:
        error_type, message = classify(exc)
        if error_type == "timeout":
            message = f"no complete response within {timeout:g}s ({message})"
    elapsed_ms = (time.perf_counter() - t0) * 1000
    if message is not None:
        message = message.replace(endpoint.url, endpoint.display_url)
        message = service.scrub(message)[:MAX_ERROR_MESSAGE]
    return EndpointResult(
        name=endpoint.name,
        method=endpoint.method,
        url=endpoint.display_url,
        status_code=status_code,
        response_time_ms=elapsed_ms,
        ok=error_type is None,
        error_type=error_type,
        error_message=message,
        latency_threshold_ms=endpoint.latency_threshold_ms,
    )


def check_status(results: list[EndpointResult]) -> CheckStatus:
    """`down` if any call failed, `degraded` if one was slower than its threshold, else `up`."""
    if any(not r.ok for r in results):
        return "down"
    if any(not r.within_threshold for r in results):
        return "degraded"
    return "up"


def classify(exc: BaseException) -> tuple[ErrorType, str]:
    """The error type and a short message for an exception raised by an HTTP call."""
    chain = list(_chain(exc))
    # The aiohttp transport re-raises as httpx exceptions, and maps some loosely
    # (any ClientConnectionError becomes ConnectTimeout), so the original cause decides first.
    for cause in chain:
        if isinstance(cause, aiohttp.ClientConnectorDNSError | socket.gaierror):
            return "dns", _message(cause)
        if isinstance(cause, aiohttp.ClientSSLError | ssl.SSLError | ssl.CertificateError):
            return "tls", _message(cause)
    for cause in chain:
        if isinstance(cause, aiohttp.ServerTimeoutError):
            return "timeout", _message(cause)
        if isinstance(cause, aiohttp.ClientConnectionError | ConnectionError):
            return "connection", _message(cause)
    for cause in chain:
        if isinstance(cause, httpx.TimeoutException | TimeoutError):
            return "timeout", _message(cause)
        if isinstance(cause, httpx.NetworkError | httpx.RemoteProtocolError):
            return "connection", _message(cause)
    return "other", _message(exc)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _message(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
