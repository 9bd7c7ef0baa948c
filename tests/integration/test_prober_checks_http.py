"""Conditions, methods, bodies, timings and certificate expiry against real loopback servers,
through the production client (httpx over aiohttp)."""

from __future__ import annotations

import json
import ssl
import subprocess
from pathlib import Path

import pytest

from services.prober.catalog import Service, parse_catalog
from services.prober.service import make_client
from shared.events import CheckCompleted
from shared.settings import Settings
from tests.factories import run_check
from tests.targets import Reply, Target

SETTINGS = Settings(region="test", prober_id="prober-test")


def service(endpoints_yaml: str, **env: str) -> Service:
    text = f"services:\n  - id: svc\n    timeout: 2s\n    endpoints:\n{endpoints_yaml}"
    return parse_catalog(text, label="t.yaml", settings=SETTINGS, env=env).services[0]


async def check(svc: Service, ssl_context: ssl.SSLContext | None = None) -> CheckCompleted:
    async with make_client(SETTINGS, ssl_context=ssl_context) as client:
        return await run_check(svc, client=client, settings=SETTINGS)


def json_reply(body: object, **headers: str) -> Reply:
    return Reply(
        200, body=json.dumps(body), headers={"Content-Type": "application/json", **headers}
    )


async def test_a_gatus_style_catalog_against_a_real_server() -> None:
    healthy = json_reply({"status": "UP", "data": {"count": 2}, "items": [1]}, **{"X-Ver": "1.4"})
    async with Target(lambda n: healthy if n <= 1 else json_reply({"status": "DOWN"})) as target:
        svc = service(
            f"      - name: health\n"
            f"        url: '{target.url}'\n"
            "        conditions:\n"
            "          - '[STATUS] == 200'\n"
            "          - '[BODY].status == UP'\n"
            "          - '[BODY].data.count > 0'\n"
            "          - 'len([BODY].items) >= 1'\n"
            "          - '[HEADER].x-ver == pat(1.*)'\n"
            "          - '[RESPONSE_TIME] < 1500'\n"
        )
        up = await check(svc)
        down = await check(svc)
    assert up.status == "up", up.endpoints[0].error_message
    endpoint = down.endpoints[0]
    assert (down.status, endpoint.error_type, endpoint.status_code) == ("down", "assertion", 200)
    assert endpoint.failed_condition == "[BODY].status == UP"
    assert endpoint.error_message is not None
    assert endpoint.error_message.startswith(
        "condition '[BODY].status == UP' failed: [BODY].status is \"DOWN\""
    )


@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_json_bodies_and_headers_are_sent(method: str) -> None:
    async with Target(lambda n: json_reply({"created": True})) as target:
        svc = service(
            f"      - name: write\n"
            f"        url: '{target.url}'\n"
            f"        method: {method}\n"
            "        headers: {Authorization: 'Bearer ${TOKEN}'}\n"
            "        json: {name: probe, tags: [a, b]}\n"
            "        expectedStatus: [200, 201]\n"
            "        conditions: ['[BODY].created == true']\n",
            TOKEN="tok-123456",
        )
        result = await check(svc)
    served = target.served[0]
    assert result.status == "up", result.endpoints[0].error_message
    assert (served.method, served.content_type) == (method, "application/json")
    assert json.loads(served.body) == {"name": "probe", "tags": ["a", "b"]}
    assert "tok-123456" not in result.to_wire().decode()


async def test_timings_show_a_new_connection_then_a_reused_one() -> None:
    async with Target() as target:
        svc = service(f"      - {{name: a, url: '{target.url}'}}\n")
        async with make_client(SETTINGS) as client:
            first = await run_check(svc, client=client, settings=SETTINGS)
            second = await run_check(svc, client=client, settings=SETTINGS)
    t1, t2 = first.endpoints[0].timings, second.endpoints[0].timings
    assert t1 is not None and t2 is not None
    assert t1.reused is False and t1.connect_ms is not None and t1.connect_ms > 0
    assert t1.ttfb_ms is not None and t1.connect_ms <= t1.ttfb_ms
    assert t1.ttfb_ms <= first.endpoints[0].response_time_ms
    assert t2.reused is True and t2.connect_ms is None and t2.ttfb_ms is not None
    assert first.endpoints[0].cert_expires_at is None  # plain http


def make_cert(tmp_path: Path, days: int) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 valid for `days` days, and its key (openssl CLI)."""
    cert, key = tmp_path / f"cert-{days}.pem", tmp_path / f"key-{days}.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(days)),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.parametrize(("days_valid", "status"), [(30, "up"), (5, "down")])
async def test_certificate_expiry_condition(tmp_path: Path, days_valid: int, status: str) -> None:
    cert, key = make_cert(tmp_path, days_valid)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    async with Target(ssl_context=server) as target:
        svc = service(f"      - {{name: tls, url: '{target.url}', certificateExpiresInDays: 14}}\n")
        result = await check(svc, ssl_context=trusting)
    endpoint = result.endpoints[0]
    assert result.status == status, endpoint.error_message
    assert endpoint.cert_expires_at is not None
    days_left = (endpoint.cert_expires_at - result.started_at).total_seconds() / 86400
    assert days_valid - 1 < days_left <= days_valid
    if status == "down":
        assert (endpoint.error_type, endpoint.failed_condition) == (
            "assertion",
            "certificateExpiresInDays: 14",
        )
        assert endpoint.error_message is not None
        assert "failed: certificate expires in 5.0 days (" in endpoint.error_message
    timings = endpoint.timings
    assert timings is not None and timings.connect_ms is not None  # includes the handshake


async def test_checks_do_not_carry_cookies_from_one_check_to_the_next() -> None:
    behaviour = lambda _: Reply(headers={"Set-Cookie": "session=abc; Path=/"})  # noqa: E731
    async with Target(behaviour) as target, make_client(SETTINGS) as client:
        for _ in range(2):
            assert (await client.get(target.url)).status_code == 200
        assert [s.cookie for s in target.served] == ["", ""]


async def test_timings_show_a_name_resolution_then_the_cached_answer() -> None:
    async with Target() as target:
        url = target.url.replace("127.0.0.1", "localhost")
        svc = service(f"      - {{name: a, url: '{url}'}}\n")
        async with make_client(SETTINGS) as client:
            first = await run_check(svc, client=client, settings=SETTINGS)
            second = await run_check(svc, client=client, settings=SETTINGS)
    assert first.status == "up", first.endpoints[0].error_message
    t1, t2 = first.endpoints[0].timings, second.endpoints[0].timings
    assert t1 is not None and t1.dns_ms is not None and t1.dns_ms >= 0
    assert t1.connect_ms is not None and t1.dns_ms + t1.connect_ms <= t1.ttfb_ms  # type: ignore[operator]
    assert t2 is not None and t2.dns_ms is None and t2.reused is True
