"""One check: status rules, error classification and what the event carries (no network)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
import pytest

from services.prober.catalog import Service, parse_catalog
from services.prober.probe import check_status, classify
from services.prober.transport import CookielessClient, LazyHeadersResponse
from shared.settings import Settings
from tests.factories import make_endpoint_result, run_check

SETTINGS = Settings(region="eu-test", prober_id="p-1")
Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def service(endpoints_yaml: str, **env: str) -> Service:
    text = f"services:\n  - id: svc\n    timeout: 200ms\n    endpoints:\n{endpoints_yaml}"
    return parse_catalog(text, label="t.yaml", settings=SETTINGS, env=env).services[0]


async def check(svc: Service, handler: Handler) -> object:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        return await run_check(svc, client=client, settings=SETTINGS, trigger="manual")


def test_status_rules() -> None:
    ok = make_endpoint_result(response_time_ms=10, latency_threshold_ms=100)
    slow = make_endpoint_result(response_time_ms=150, latency_threshold_ms=100)
    no_threshold = make_endpoint_result(response_time_ms=5000, latency_threshold_ms=None)
    failed = make_endpoint_result(ok=False, error_type="timeout", response_time_ms=1)
    assert check_status([ok, no_threshold]) == "up"
    assert check_status([ok, slow]) == "degraded"
    assert check_status([slow, failed]) == "down"
    assert check_status([failed]) == "down"


async def test_all_endpoints_run_concurrently_and_build_the_event() -> None:
    svc = service(
        "      - {name: a, url: 'http://t/a'}\n"
        "      - {name: b, url: 'http://t/b', expectedStatus: [200]}\n"
    )
    arrived: list[str] = []
    both_in = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        arrived.append(request.url.path)
        if len(arrived) == 2:
            both_in.set()
        await asyncio.wait_for(both_in.wait(), 1)  # only returns if both calls are in flight
        return httpx.Response(200 if request.url.path == "/a" else 503)

    result = await check(svc, handler)
    assert sorted(arrived) == ["/a", "/b"]
    assert (result.service_id, result.region, result.prober_id, result.trigger) == (
        "svc",
        "eu-test",
        "p-1",
        "manual",
    )
    assert result.status == "down"
    a, b = result.endpoints
    assert (a.ok, a.status_code, a.error_type) == (True, 200, None)
    assert (b.ok, b.status_code, b.error_type) == (False, 503, "http_status")
    assert "503" in b.error_message and "200" in b.error_message
    assert result.started_at.tzinfo is not None and result.scheduled_at is not None
    assert result.duration_ms >= max(a.response_time_ms, b.response_time_ms) * 0.9


async def test_slow_but_ok_is_degraded() -> None:
    svc = service("      - {name: a, url: 'http://t/a', latencyThresholdMs: 1}\n")

    async def handler(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.02)
        return httpx.Response(204)

    result = await check(svc, handler)
    assert result.status == "degraded"
    assert result.endpoints[0].ok and result.endpoints[0].response_time_ms >= 20


async def test_whole_call_is_bounded_by_the_service_timeout() -> None:
    svc = service("      - {name: a, url: 'http://t/a'}\n")

    async def handler(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    result = await check(svc, handler)
    endpoint = result.endpoints[0]
    assert (result.status, endpoint.error_type, endpoint.status_code) == ("down", "timeout", None)
    assert 150 <= endpoint.response_time_ms < 1000


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("refused"), "connection"),
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.RemoteProtocolError("closed early"), "connection"),
        (httpx.UnsupportedProtocol("ftp"), "other"),
        (ValueError("odd"), "other"),
    ],
)
async def test_transport_errors_become_typed_results(exc: Exception, expected: str) -> None:
    svc = service("      - {name: a, url: 'http://t/a'}\n")

    async def handler(_: httpx.Request) -> httpx.Response:
        raise exc

    result = await check(svc, handler)
    assert result.status == "down"
    assert result.endpoints[0].error_type == expected
    assert result.endpoints[0].error_message


def chained(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        # The aiohttp transport maps every ClientConnectionError to httpx.ConnectTimeout;
        # the original cause must win, or a reset would read as a timeout.
        (chained(httpx.ConnectTimeout("x"), aiohttp.ServerDisconnectedError()), "connection"),
        (chained(httpx.ConnectTimeout("x"), aiohttp.SocketTimeoutError()), "timeout"),
        (chained(httpx.ConnectError("x"), socket.gaierror(-2, "Name or service not known")), "dns"),
        (chained(httpx.ConnectError("x"), ssl.SSLCertVerificationError(1, "self-signed")), "tls"),
        (chained(httpx.ConnectError("x"), ConnectionRefusedError(111, "refused")), "connection"),
        (chained(httpx.ReadError("x"), ConnectionResetError(104, "reset")), "connection"),
        (TimeoutError(), "timeout"),
    ],
)
def test_classification_follows_the_cause(exc: BaseException, expected: str) -> None:
    error_type, message = classify(exc)
    assert error_type == expected
    assert message


async def test_secrets_are_sent_but_never_reported() -> None:
    svc = service(
        "      - name: a\n"
        "        url: 'http://t/a?key=${KEY}'\n"
        "        headers: {Authorization: 'Bearer ${KEY}'}\n",
        KEY="s3cr3t-key",
    )
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ConnectError(f"cannot reach {request.url}")

    result = await check(svc, handler)
    assert seen[0].headers["Authorization"] == "Bearer s3cr3t-key"
    assert seen[0].url.params["key"] == "s3cr3t-key"
    assert "s3cr3t-key" not in result.to_wire().decode()
    assert result.endpoints[0].url == "http://t/a?key=***"
    assert result.endpoints[0].error_message == "ConnectError: cannot reach http://t/a?key=***"


async def test_credentials_written_in_the_url_are_scrubbed_from_errors() -> None:
    svc = service("      - {name: a, url: 'http://admin:pa55word@t/a'}\n")

    async def handler(_: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("login as admin:pa55word failed")

    result = await check(svc, handler)
    assert "pa55word" not in result.to_wire().decode()
    assert result.endpoints[0].url == "http://***@t/a"


def test_a_lazy_response_reads_its_raw_headers_only_when_asked() -> None:
    response = LazyHeadersResponse(
        200,
        raw_headers=(
            (b"Content-Type", b"application/json"),
            (b"X-Trace", b"a"),
            (b"x-trace", b"b"),
        ),
        stream=httpx.ByteStream(b'{"status": "UP"}'),
    )
    assert response._raw_headers is not None  # nothing parsed yet
    assert response.headers.get_list("x-trace") == ["a", "b"]
    assert response.headers["content-type"] == "application/json"
    response.headers = httpx.Headers({"a": "1"})
    assert dict(response.headers) == {"a": "1"}


async def test_send_direct_skips_only_layers_the_client_does_not_use() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(302, headers={"Location": "/next"})

    async def hook(request: httpx.Request) -> None:
        seen.append("hook")

    request = httpx.Request("GET", "http://target.test/first")
    async with CookielessClient(transport=httpx.MockTransport(answer)) as plain:
        response = await plain.send_direct(request)
        assert (response.status_code, seen) == (302, ["/first"])
    seen.clear()
    hooked = CookielessClient(
        transport=httpx.MockTransport(answer), event_hooks={"request": [hook]}
    )
    async with hooked:
        await hooked.send_direct(request)
        assert seen == ["hook", "/first"]  # the full path, hooks included
    seen.clear()
    mounted = CookielessClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(500)),
        mounts={"http://target.test": httpx.MockTransport(answer)},
    )
    async with mounted:
        assert (await mounted.send_direct(request)).status_code == 302  # the mount's transport
