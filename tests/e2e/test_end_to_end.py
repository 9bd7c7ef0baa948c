"""End to end: prober, recorder, aggregator and api as separate processes, real NATS and
PostgreSQL, against HTTP targets whose failures follow a schedule this test controls.

The expected numbers come from what the targets themselves served, never from our code.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import pytest

from tests.e2e.conftest import ScheduledTarget, Stack, api_get, catalog
from tests.polling import eventually

pytestmark = pytest.mark.timeout(180)


async def _raw_count(db_url: str, service_id: str) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM watch_server_logs WHERE service_id = $1", service_id
            )
        )
    finally:
        await conn.close()


async def test_numbers_match_what_the_target_served(
    make_stack: Callable[[str], Stack], target: ScheduledTarget, db_url: str
) -> None:
    stack = make_stack(catalog(target.url))
    await stack.wait_api()
    await eventually(
        lambda: _served(target), until=lambda n: n >= 40, timeout=60, what="40 flaky requests"
    )

    # Stop the prober so the truth stops moving; it finishes and publishes what is in flight.
    assert await stack.stop("prober") == 0
    flaky_total, flaky_failed = target.total("flaky"), target.total("flaky", 500)
    steady_total = target.total("steady")
    assert flaky_failed == flaky_total // 4

    async def metrics(service: str) -> dict:
        r = await api_get(stack, f"/api/metrics/{service}?days=2")
        return r.json() if r.status_code == 200 else {}

    m = await eventually(
        lambda: metrics("e2e-flaky"),
        until=lambda m: m.get("totalRequests") == flaky_total,
        timeout=30,
        what=f"flaky totalRequests == {flaky_total}",
    )
    assert m["serviceId"] == "e2e-flaky"
    assert m["failedRequests"] == flaky_failed
    assert m["successfulRequests"] == flaky_total - flaky_failed
    assert m["uptime"] == pytest.approx(100 * (flaky_total - flaky_failed) / flaky_total, abs=1e-3)
    assert m["errorsByType"].get("http_status") == flaky_failed
    assert m["period"]["days"] == 2
    assert 0 < m["minResponseTime"] <= m["avgResponseTime"] <= m["maxResponseTime"]

    s = await eventually(
        lambda: metrics("e2e-steady"),
        until=lambda m: m.get("totalRequests") == steady_total,
        timeout=30,
        what=f"steady totalRequests == {steady_total}",
    )
    assert s["uptime"] == 100.0 and s["failedRequests"] == 0

    # Every check stored exactly once in the raw table.
    assert await _raw_count(db_url, "e2e-flaky") == flaky_total
    assert await _raw_count(db_url, "e2e-steady") == steady_total

    # SLA: 75 % is below 99.9 %; each day the target failed on is a breach day.
    failing_days = {day for (day, status) in target.served["flaky"] if status == 500}
    sla = (await api_get(stack, "/api/sla/e2e-flaky?days=2")).json()
    assert sla["slaTarget"] == 99.9
    assert sla["currentSLA"] == pytest.approx(m["uptime"], abs=1e-3)
    assert sla["isBreached"] is True
    assert sla["breaches"] == len(failing_days)
    sla_ok = (await api_get(stack, "/api/sla/e2e-steady?days=2")).json()
    assert sla_ok["isBreached"] is False and sla_ok["breaches"] == 0
    assert sla_ok["responseTimeSLA"] == 100.0

    # Day status: 25 % failures is a major outage ('mo'); the steady service is operational.
    days = {
        d["date"]: d["status"]
        for d in (await api_get(stack, "/api/uptime/e2e-flaky?days=2")).json()["days"]
    }
    for day in failing_days:
        assert days[day] == "mo"
    steady_days = {
        d["date"]: d["status"]
        for d in (await api_get(stack, "/api/uptime/e2e-steady?days=2")).json()["days"]
    }
    for day, _status in target.served["steady"]:
        assert steady_days[day] == "o"

    trend = (await api_get(stack, "/api/metrics/e2e-flaky/trend?hours=2")).json()
    assert sum(p["requests"] for p in trend["points"]) == flaky_total

    assert (await api_get(stack, "/api/metrics/unknown-service?days=30")).status_code == 404
    bad = await api_get(stack, "/api/metrics/e2e-flaky?days=abc")
    assert bad.status_code == 422 and "days" in bad.text
    assert stack.errors() == [], stack.errors()


async def _served(target: ScheduledTarget) -> int:
    return target.total("flaky")
