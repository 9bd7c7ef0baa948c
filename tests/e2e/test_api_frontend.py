"""The api as a process behind the real pipeline, as a frontend sees it: badges, Prometheus
gauges, CORS from CORS_ORIGINS, the manual-check rate limit with a real prober, and every
read going through the read-only role (the default)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.e2e.conftest import ScheduledTarget, Stack, api_get, catalog
from tests.polling import eventually

pytestmark = pytest.mark.timeout(180)

ORIGIN = "http://localhost:5173"


async def test_badges_gauges_cors_and_rate_limit(
    make_stack: Callable[[str], Stack], target: ScheduledTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORS_ORIGINS", f"https://dash.example.com,{ORIGIN}")
    monkeypatch.setenv("HEALTH_CHECK_IP_BURST", "2")
    monkeypatch.setenv("METRICS_CACHE_SECONDS", "0")
    monkeypatch.delenv("API_DB_READONLY", raising=False)
    stack = make_stack(catalog(target.url))
    await stack.wait_api()

    async def steady() -> dict:
        r = await api_get(stack, "/api/metrics/e2e-steady?days=1")
        return r.json() if r.status_code == 200 else {}

    await eventually(
        steady, until=lambda m: m.get("totalRequests", 0) >= 5, timeout=60, what="steady counted"
    )
    badge = await api_get(stack, "/api/badges/e2e-steady/uptime.svg?days=1")
    assert badge.status_code == 200 and badge.headers["content-type"] == "image/svg+xml"
    assert ">100%<" in badge.text and badge.headers["cache-control"] == "public, max-age=60"
    rt = await api_get(stack, "/api/badges/e2e-steady/response-time.svg")
    assert rt.status_code == 200 and "ms<" in rt.text

    scrape = (await api_get(stack, "/metrics")).text
    assert 'watch_service_uptime_percent{service_id="e2e-steady",window="1d"} 100.0' in scrape
    assert 'watch_service_up{service_id="e2e-steady"} 1.0' in scrape

    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as client:
        r = await client.get("/api/sla/e2e-flaky?days=1", headers={"Origin": ORIGIN})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
        assert r.json()["accounting"]["uptimeBasis"] == "requests"
        other = await client.get("/api/status", headers={"Origin": "https://elsewhere.test"})
        assert "access-control-allow-origin" not in other.headers

        codes = []
        for _ in range(3):
            r = await client.post("/api/health-check?serviceId=e2e-steady")
            codes.append(r.status_code)
        assert codes == [200, 200, 429]
        assert int(r.headers["retry-after"]) >= 1
    assert not stack.errors()
