"""One check of one service: call its endpoints concurrently and classify what went wrong.

Failures are data, never exceptions. What a call raises maps to an `errorType`:

    timeout      the whole call, or one phase of it, took longer than the service's timeout
    dns          the host name did not resolve
    tls          certificate rejected or TLS handshake failed
    connection   refused, reset or closed before a response
    http_status  a response came, with a status the endpoint does not expect
    assertion    a response came with an expected status, but a condition on its body,
                 headers, latency or certificate does not hold (`failedCondition` says which)
    other        anything else (bad URL, unsupported protocol, ...)
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime

import aiohttp
import httpx

from services.prober import timing, wire
from services.prober.catalog import Endpoint, Service, status_matches
from services.prober.conditions import MISSING, Context, decode_json
from services.prober.transport import BODY_IN_MEMORY, CookielessClient
from shared.events import (
    CheckStatus,
    EndpointResult,
    ErrorType,
    Trigger,
)
from shared.settings import Settings

MAX_ERROR_MESSAGE = 300
_NO_STREAM = httpx.ByteStream(b"")


async def probe_service(
    service: Service,
    *,
    client: httpx.AsyncClient,
    settings: Settings,
    trigger: Trigger = "scheduled",
    scheduled_at: datetime | None = None,
    requests: RequestCache | None = None,
) -> wire.Check:
    """Call every endpoint of `service` at once; the check as a struct, ready to encode.

    `.to_event()` gives the validated `CheckCompleted` (manual runs answer with it).
    """
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    if len(service.endpoints) == 1:  # the common case: no task per endpoint
        results = [
            await call_endpoint(
                service.endpoints[0], service=service, client=client, requests=requests
            )
        ]
    else:
        results = list(
            await asyncio.gather(
                *(
                    call_endpoint(e, service=service, client=client, requests=requests)
                    for e in service.endpoints
                )
            )
        )
    return wire.Check(
        check_id=wire.new_check_id(),
        service_id=service.id,
        region=settings.region,
        prober_id=settings.prober_id,
        trigger=trigger,
        scheduled_at=scheduled_at or started_at,
        started_at=started_at,
        duration_ms=(time.perf_counter() - t0) * 1000,
        status=check_status(results),
        endpoints=results,
    )


class RequestCache:
    """httpx requests built once per endpoint and reused by each of its checks.

    Building a request (URL merge, headers, cookies) was ~15 % of a check's CPU. An httpx
    request is not changed by sending it, so one object serves every check of an endpoint.
    Entries are keyed by the endpoint object, which a catalog reload replaces: `clear()` then.
    """

    def __init__(self, *, client: httpx.AsyncClient) -> None:
        self.client = client
        # id -> (endpoint, request); holding the endpoint keeps its id unique.
        self._built: dict[int, tuple[Endpoint, httpx.Request]] = {}

    def get(self, endpoint: Endpoint) -> httpx.Request:
        """The request for `endpoint`, built on first use."""
        entry = self._built.get(id(endpoint))
        if entry is None or entry[0] is not endpoint:
            entry = (endpoint, build_request(endpoint, client=self.client))
            self._built[id(endpoint)] = entry
        return entry[1]

    def prepare(self, services: Iterable[Service]) -> None:
        """Build the requests of `services` now, before the heap is frozen (see service.py)."""
        for service in services:
            for endpoint in service.endpoints:
                try:
                    self.get(endpoint)
                except Exception:  # an unusable URL fails in its check, classified there
                    continue

    def clear(self) -> None:
        """Forget every request (the catalog changed)."""
        self._built.clear()


def build_request(endpoint: Endpoint, *, client: httpx.AsyncClient) -> httpx.Request:
    """The httpx request of one call to `endpoint`, with the client's defaults merged in."""
    return client.build_request(
        endpoint.method,
        _parsed_url(endpoint.url),
        headers=dict(endpoint.headers),
        content=endpoint.body,
        json=endpoint.json_body,
        timeout=None,  # call_endpoint bounds the whole call instead
    )


async def call_endpoint(
    endpoint: Endpoint,
    *,
    service: Service,
    client: httpx.AsyncClient,
    requests: RequestCache | None = None,
) -> wire.Endpoint:
    """One HTTP call, timed, with its outcome classified; never raises (except cancellation)."""
    timeout = service.timeout_seconds
    status_code: int | None = None
    error_type: ErrorType | None = None
    message: str | None = None
    failed: str | None = None
    cert_expires_at: datetime | None = None
    phases = timing.begin()
    t0 = phases.start
    try:
        if requests is not None and requests.client is client:
            request = requests.get(endpoint)
        else:
            request = build_request(endpoint, client=client)
        # One deadline for the whole call, a slow-dripping body included (httpx's timeouts
        # are per phase; the request carries none, so aiohttp sets no timers of its own).
        async with asyncio.timeout(timeout):
            if isinstance(client, CookielessClient):
                response = await client.send_direct(request)
            else:
                response = await client.send(request, stream=True)
            in_memory = response.extensions.get(BODY_IN_MEMORY)
            try:
                # The production transport has read the body already; httpx's chunked
                # decoding of it is only worth its CPU when a condition reads the body.
                if endpoint.reads_body or not in_memory:
                    await response.aread()
            finally:
                if in_memory:
                    response.is_closed = True  # nothing left to release
                else:
                    await response.aclose()
                # httpx's client links a response and its stream both ways. Unlinked, each
                # check's response is freed by reference counting at once; left to the
                # cyclic collector it cost ~15 % of the CPU at 1,700 checks/s.
                response.stream = _NO_STREAM
        elapsed_ms = (time.perf_counter() - t0) * 1000
        status_code = response.status_code
        cert_expires_at = phases.cert_not_after or _peer_cert_expiry(response)
        if not status_matches(status_code, endpoint.expected_status):
            error_type = "http_status"
            message = f"status {status_code} not in expected {', '.join(endpoint.expected_status)}"
        else:
            failure = check_conditions(endpoint, response, elapsed_ms, cert_expires_at)
            if failure is not None:
                error_type = "assertion"
                failed, message = failure
    except Exception as exc:
        elapsed_ms = (time.perf_counter() - t0) * 1000
        error_type, message = classify(exc)
        if error_type == "timeout":
            message = f"no complete response within {timeout:g}s ({message})"
    if message is not None:
        message = message.replace(endpoint.url, endpoint.display_url)
        message = service.scrub(message)[:MAX_ERROR_MESSAGE]
    return wire.Endpoint(
        name=endpoint.name,
        method=endpoint.method,
        url=endpoint.display_url,
        status_code=status_code,
        response_time_ms=elapsed_ms,
        ok=error_type is None,
        error_type=error_type,
        error_message=message,
        latency_threshold_ms=endpoint.latency_threshold_ms,
        failed_condition=service.scrub(failed) if failed is not None else None,
        timings=_timings(phases),
        cert_expires_at=cert_expires_at,
    )


def check_conditions(
    endpoint: Endpoint,
    response: httpx.Response,
    elapsed_ms: float,
    cert_expires_at: datetime | None,
) -> tuple[str, str] | None:
    """The first condition that does not hold, as (condition, message); None when all hold."""
    failures: list[tuple[str, str]] = []
    if endpoint.reads_body:
        text = response.text
        if endpoint.body_contains is not None and endpoint.body_contains not in text:
            failures.append(
                (
                    f"bodyContains: {endpoint.body_contains}",
                    f"body does not contain it (body: {_excerpt(text)})",
                )
            )
        if endpoint.body_regex is not None and not endpoint.body_regex.search(text):
            failures.append(
                (
                    f"bodyRegex: {endpoint.body_regex.pattern}",
                    f"no match in the body (body: {_excerpt(text)})",
                )
            )
        if endpoint.conditions:
            context = Context(
                status=response.status_code,
                response_time_ms=elapsed_ms,
                text=text,
                headers=response.headers,
            )
            needs_json = any(c.needs_json for c in endpoint.conditions)
            body = decode_json(text) if needs_json else MISSING
            for condition in endpoint.conditions:
                seen = condition.check(context, body)
                if seen is not None:
                    failures.append((condition.text, seen))
    days = endpoint.certificate_expires_in_days
    if days is not None:
        cert_condition = f"certificateExpiresInDays: {days:g}"
        if cert_expires_at is None:
            failures.append((cert_condition, "no verified server certificate to read"))
        else:
            left = (cert_expires_at - datetime.now(UTC)).total_seconds() / 86_400
            if left < days:
                expires = cert_expires_at.isoformat().replace("+00:00", "Z")
                failures.append(
                    (cert_condition, f"certificate expires in {left:.1f} days ({expires})")
                )
    if not failures:
        return None
    first, seen = failures[0]
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    return first, f"condition '{first}' failed: {seen}{more}"


def _excerpt(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")


def _timings(phases: timing.Phases) -> wire.Timings | None:
    if phases.ttfb_ms is None and phases.connect_ms is None:
        return None  # the transport reported nothing (e.g. a test's MockTransport)
    return wire.Timings(
        dns_ms=phases.dns_ms,
        connect_ms=phases.connect_ms,
        ttfb_ms=phases.ttfb_ms,
        reused=phases.reused,
    )


def _peer_cert_expiry(response: httpx.Response) -> datetime | None:
    """notAfter of the server certificate, with httpx's own transport (httpcore)."""
    stream = response.extensions.get("network_stream")
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    if not isinstance(ssl_object, ssl.SSLObject):
        return None
    not_after = (ssl_object.getpeercert() or {}).get("notAfter")
    if not isinstance(not_after, str):
        return None
    return datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), UTC)


@functools.lru_cache(maxsize=200_000)
def _parsed_url(url: str) -> httpx.URL:
    """The URL parsed once, not on every check (parsing was ~10 % of a check's CPU)."""
    return httpx.URL(url)


def check_status(results: Sequence[EndpointResult | wire.Endpoint]) -> CheckStatus:
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
