"""Classification with the production transport (httpx over aiohttp) against real sockets."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from deploy.local.embedded import free_port
from services.prober.catalog import Service, parse_catalog
from services.prober.service import make_client
from shared.events import CheckCompleted
from shared.settings import Settings
from tests.factories import run_check
from tests.targets import FlakyTarget, Reply, Target, always

SETTINGS = Settings(region="test", prober_id="prober-test")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(SETTINGS) as c:
        yield c


def service(url: str, *, timeout: str = "2s", threshold: str = "") -> Service:
    extra = f", latencyThresholdMs: {threshold}" if threshold else ""
    text = (
        f"services:\n  - id: svc\n    timeout: {timeout}\n    endpoints:\n"
        f"      - {{name: main, url: '{url}', expectedStatus: [200]{extra}}}\n"
    )
    return parse_catalog(text, label="t.yaml", settings=SETTINGS, env={}).services[0]


async def check(svc: Service, client: httpx.AsyncClient) -> CheckCompleted:
    return await run_check(svc, client=client, settings=SETTINGS)


async def test_production_client_uses_the_aiohttp_transport(client: httpx.AsyncClient) -> None:
    from services.prober.transport import AiohttpTransport

    assert isinstance(client._transport, AiohttpTransport)


async def test_up_then_wrong_status(client: httpx.AsyncClient) -> None:
    async with FlakyTarget(fail_every=2, fail_status=503) as target:
        first = await check(service(target.url), client)
        second = await check(service(target.url), client)
    assert first.status == "up"
    assert (first.endpoints[0].status_code, first.endpoints[0].error_type) == (200, None)
    assert second.status == "down"
    assert (second.endpoints[0].status_code, second.endpoints[0].error_type) == (503, "http_status")
    assert target.requests == 2


async def test_slow_server_is_a_timeout(client: httpx.AsyncClient) -> None:
    async with Target(always(200, delay=3.0)) as target:
        result = await check(service(target.url, timeout="300ms"), client)
    endpoint = result.endpoints[0]
    assert (result.status, endpoint.error_type, endpoint.status_code) == ("down", "timeout", None)
    assert 250 <= endpoint.response_time_ms < 2000


async def test_slower_than_threshold_is_degraded(client: httpx.AsyncClient) -> None:
    async with Target(lambda n: Reply(200, delay=0.15)) as target:
        result = await check(service(target.url, threshold="50"), client)
    assert result.status == "degraded"
    assert result.endpoints[0].ok and result.endpoints[0].response_time_ms >= 150


async def test_refused_port_is_a_connection_error(client: httpx.AsyncClient) -> None:
    result = await check(service(f"http://127.0.0.1:{free_port()}/health"), client)
    assert (result.status, result.endpoints[0].error_type) == ("down", "connection")


async def test_closed_without_response_is_a_connection_error(client: httpx.AsyncClient) -> None:
    async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await check(service(f"http://127.0.0.1:{port}/health"), client)
    finally:
        server.close()
        await server.wait_closed()
    assert (result.status, result.endpoints[0].error_type) == ("down", "connection")


async def test_unresolvable_host_is_a_dns_error(client: httpx.AsyncClient) -> None:
    async with asyncio.timeout(15):  # a slow sandbox resolver must not hang the suite
        result = await check(service("http://nonexistent.invalid/health", timeout="10s"), client)
    assert (result.status, result.endpoints[0].error_type) == ("down", "dns")


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no CA signed, and its key (made by the openssl CLI)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_self_signed_certificate_is_a_tls_error(
    client: httpx.AsyncClient, self_signed: tuple[Path, Path]
) -> None:
    cert, key = self_signed
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    async with Target(always(200), ssl_context=context) as target:
        assert target.url.startswith("https://")
        result = await check(service(target.url), client)
        # The same server is fine for a client that trusts the certificate: TLS really works.
        trusting = httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(cert)))
        async with trusting:
            trusted = await run_check(service(target.url), client=trusting, settings=SETTINGS)
    assert (result.status, result.endpoints[0].error_type) == ("down", "tls")
    assert trusted.status == "up"
