"""The api against real PostgreSQL: every endpoint's numbers from rollup rows the test
inserts, and what it answers while PostgreSQL is stopped."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from services.api.main import ApiServer
from shared import histogram
from shared.db import ensure_partitions
from shared.settings import Settings
from tests.polling import eventually

NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
TODAY = NOW.date()
HOUR = NOW.replace(minute=0)


@asynccontextmanager
async def running_api(settings: Settings, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The api on a loopback port with a fixed clock, and a client for it."""
    server = ApiServer(
        settings=settings.model_copy(update={"api_host": "127.0.0.1", **kwargs}),
        clock=lambda: NOW,
    )
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            yield client
    finally:
        await server.stop()


def hist_of(values: list[float]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        histogram.add(out, v)
    return out


async def insert(conn: asyncpg.Connection, table: str, **cols: Any) -> None:
    names = list(cols)
    values = [json.dumps(v) if isinstance(v, dict) else v for v in cols.values()]
    marks = ", ".join(f"${i + 1}" for i in range(len(names)))
    await conn.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})", *values)


async def add_service(conn: asyncpg.Connection, sid: str, sla: float, active: bool = True) -> None:
    await insert(
        conn,
        "services",
        id=sid,
        name=sid.upper(),
        active=active,
        interval_seconds=30.0,
        timeout_ms=10000,
        sla_target=sla,
        defined_at=NOW,
    )


def rollup(**cols: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "total_checks": 0,
        "up_checks": 0,
        "degraded_checks": 0,
        "down_checks": 0,
        "total_requests": 0,
        "successful_requests": 0,
        "failed_requests": 0,
        "within_threshold": 0,
        "timed_requests": 0,
        "sum_response_time_ms": 0.0,
        "min_response_time_ms": None,
        "max_response_time_ms": None,
        "errors": {},
        "latency_hist": {},
    }
    base.update(cols)
    return base


@pytest.fixture
async def seeded(db_url: str) -> str:
    """svc-a (target 99) with three days and two hours of rollups, svc-b with 1..100 ms,
    a retired service, the aggregator's state and raw rows from two probers."""
    conn = await asyncpg.connect(db_url)
    try:
        await add_service(conn, "svc-a", 99.0)
        await add_service(conn, "svc-b", 99.9)
        await add_service(conn, "gone", 99.9, active=False)
        day = "api_call_logs"
        await insert(
            conn,
            day,
            service_id="svc-a",
            day=TODAY,
            **rollup(
                total_checks=100,
                up_checks=90,
                degraded_checks=5,
                down_checks=5,
                total_requests=200,
                successful_requests=190,
                failed_requests=10,
                within_threshold=180,
                timed_requests=195,
                sum_response_time_ms=19500.0,
                min_response_time_ms=10.0,
                max_response_time_ms=900.0,
                errors={"timeout": 5, "http_status": 5},
                latency_hist=hist_of([100.0] * 195),
            ),
        )
        await insert(
            conn,
            day,
            service_id="svc-a",
            day=TODAY - timedelta(days=1),
            **rollup(
                total_checks=100,
                up_checks=100,
                total_requests=200,
                successful_requests=200,
                within_threshold=200,
                timed_requests=200,
                sum_response_time_ms=10000.0,
                min_response_time_ms=20.0,
                max_response_time_ms=80.0,
                latency_hist=hist_of([50.0] * 200),
            ),
        )
        await insert(
            conn,
            day,
            service_id="svc-a",
            day=TODAY - timedelta(days=10),
            **rollup(
                total_checks=50,
                down_checks=50,
                total_requests=100,
                successful_requests=50,
                failed_requests=50,
                within_threshold=50,
                timed_requests=100,
                sum_response_time_ms=5000.0,
                min_response_time_ms=50.0,
                max_response_time_ms=50.0,
                errors={"connection": 50},
                latency_hist=hist_of([50.0] * 100),
            ),
        )
        values = [float(v) for v in range(1, 101)]
        await insert(
            conn,
            day,
            service_id="svc-b",
            day=TODAY,
            **rollup(
                total_checks=100,
                up_checks=100,
                total_requests=100,
                successful_requests=100,
                within_threshold=100,
                timed_requests=100,
                sum_response_time_ms=sum(values),
                min_response_time_ms=1.0,
                max_response_time_ms=100.0,
                latency_hist=hist_of(values),
            ),
        )
        hourly = "api_call_logs_hourly"
        await insert(
            conn,
            hourly,
            service_id="svc-a",
            hour=HOUR,
            **rollup(
                total_requests=20,
                successful_requests=19,
                failed_requests=1,
                timed_requests=20,
                sum_response_time_ms=2000.0,
                min_response_time_ms=100.0,
                max_response_time_ms=100.0,
                latency_hist=hist_of([100.0] * 20),
            ),
        )
        await insert(
            conn,
            hourly,
            service_id="svc-a",
            hour=HOUR - timedelta(hours=2),
            **rollup(
                total_requests=10,
                successful_requests=10,
                timed_requests=10,
                sum_response_time_ms=500.0,
                min_response_time_ms=50.0,
                max_response_time_ms=50.0,
                latency_hist=hist_of([50.0] * 10),
            ),
        )
        await insert(
            conn,
            hourly,
            service_id="svc-a",
            hour=HOUR - timedelta(hours=5),
            **rollup(total_requests=7, successful_requests=7),
        )
        for offset, status, uptime, total, ok in (
            (0, "po", 95.0, 200, 190),
            (1, "o", 100.0, 200, 200),
            (10, "mo", 50.0, 100, 50),
        ):
            await insert(
                conn,
                "uptime_records",
                service_id="svc-a",
                day=TODAY - timedelta(days=offset),
                status=status,
                uptime=uptime,
                total_requests=total,
                successful_requests=ok,
                sla_target=99.0,
            )
        await insert(
            conn,
            "service_state",
            service_id="svc-a",
            last_status="down",
            last_started_at=NOW - timedelta(seconds=10),
        )
        await ensure_partitions(conn, "watch_server_logs", TODAY - timedelta(days=3), TODAY)
        for prober, region, ago in (
            ("p-eu", "eu", 30),
            ("p-eu", "eu", 20),
            ("p-us", "us", 50),
            ("p-old", "eu", 2 * 86400),
        ):
            await conn.execute(
                "INSERT INTO watch_server_logs (check_id, started_at, service_id, status, "
                "response_time_ms, endpoint_count, failed_count, region, prober_id, trigger) "
                "VALUES (gen_random_uuid(), $1, 'svc-a', 'up', 10, 1, 0, $2, $3, 'scheduled')",
                NOW - timedelta(seconds=ago),
                region,
                prober,
            )
    finally:
        await conn.close()
    return db_url


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(d: date) -> str:
    return d.isoformat()


async def test_metrics_numbers_from_the_rollups(seeded: str, settings: Settings) -> None:
    async with running_api(settings) as api:
        r = await api.get("/api/metrics/svc-a", params={"days": 7})
        assert r.status_code == 200, r.text
        m = r.json()
        assert m["period"] == {
            "days": 7,
            "start": iso(TODAY - timedelta(days=6)),
            "end": iso(TODAY),
            "month": None,
        }
        # today + yesterday; the day 10 days ago is outside the window
        assert (m["totalRequests"], m["successfulRequests"], m["failedRequests"]) == (400, 390, 10)
        assert (m["totalChecks"], m["degradedChecks"]) == (200, 5)
        assert m["uptime"] == 97.5
        assert m["errorRate"] == 2.5
        assert m["avgResponseTime"] == 74.7  # 29500 ms / 395 timed calls = 74.68
        assert (m["minResponseTime"], m["maxResponseTime"]) == (10.0, 900.0)
        # 195 calls at 100 ms and 200 at 50 ms: p50 (rank 197) is 50 ms, p90 is 100 ms
        assert m["p50ResponseTime"] == pytest.approx(50.0, rel=0.01)
        assert m["p90ResponseTime"] == pytest.approx(100.0, rel=0.01)
        assert m["errorsByType"]["timeout"] == 5 and m["errorsByType"]["http_status"] == 5
        assert m["stale"] is False

        m30 = (await api.get("/api/metrics/svc-a", params={"days": 30})).json()
        assert (m30["totalRequests"], m30["successfulRequests"]) == (500, 440)
        assert (m30["uptime"], m30["errorRate"]) == (88.0, 12.0)
        assert m30["avgResponseTime"] == 69.7  # 34500 / 495
        assert m30["errorsByType"]["connection"] == 50

        b = (await api.get("/api/metrics/svc-b")).json()
        assert b["period"]["days"] == 30
        assert (b["uptime"], b["avgResponseTime"]) == (100.0, 50.5)
        for key, want in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
            assert b[f"{key}ResponseTime"] == pytest.approx(want, rel=0.011), key

        listing = (await api.get("/api/metrics", params={"days": 7})).json()
        assert listing["period"]["days"] == 7
        assert [s["serviceId"] for s in listing["services"]] == ["svc-a", "svc-b"]
        assert listing["services"][0]["totalRequests"] == 400

        retired = await api.get("/api/metrics/gone")
        assert retired.status_code == 200 and retired.json()["uptime"] is None
        missing = await api.get("/api/metrics/nope")
        assert missing.status_code == 404
        assert missing.json() == {"error": "not_found", "message": "unknown service 'nope'"}
        bad = await api.get("/api/metrics/svc-a", params={"days": "abc"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["got"] == "abc"


async def test_sla_trend_uptime_and_status(seeded: str, settings: Settings) -> None:
    async with running_api(settings) as api:
        s7 = (await api.get("/api/sla/svc-a", params={"days": 7})).json()
        assert s7["slaTarget"] == 99.0
        assert s7["currentSLA"] == 97.5
        assert s7["breaches"] == 1  # today is po; yesterday o
        assert s7["responseTimeSLA"] == 95.0  # 380 / 400
        assert s7["isBreached"] is True
        assert s7["errorBudget"] == {
            "allowedFailures": 4.0,
            "usedFailures": 10,
            "remainingFailures": -6.0,
            "remainingPercent": -150.0,
            "allowedFailedChecks": 2.0,  # 200 checks * 1 %
            "usedFailedChecks": 5,
            "remainingFailedChecks": -3.0,
            "checkIntervalSeconds": 30.0,
            "allowedDowntimeMinutes": 100.8,  # 7 days * 1440 min * 1 %
            "usedDowntimeMinutes": 2.5,  # 5 down checks * 30 s
            "remainingDowntimeMinutes": 98.3,
        }
        assert s7["accounting"]["uptimeBasis"] == "requests"
        s30 = (await api.get("/api/sla/svc-a")).json()
        assert (s30["breaches"], s30["currentSLA"]) == (2, 88.0)
        assert s30["errorBudget"]["allowedFailures"] == 5.0
        b = (await api.get("/api/sla/svc-b")).json()
        assert (b["currentSLA"], b["isBreached"], b["breaches"]) == (100.0, False, 0)
        assert b["errorBudget"]["remainingPercent"] == 100.0

        trend = (await api.get("/api/metrics/svc-a/trend", params={"hours": 3})).json()
        assert [at(p["hour"]) for p in trend["points"]] == [
            HOUR - timedelta(hours=2),
            HOUR - timedelta(hours=1),
            HOUR,
        ]
        assert [
            (p["requests"], p["uptime"], p["avgResponseTime"], p["p95ResponseTime"])
            for p in trend["points"]
        ] == [(10, 100.0, 50.0, 50.0), (0, None, None, None), (20, 95.0, 100.0, 100.0)]
        assert len((await api.get("/api/metrics/svc-a/trend")).json()["points"]) == 24

        days = (await api.get("/api/uptime/svc-a", params={"days": 12})).json()["days"]
        assert len(days) == 12
        assert days[0] == {"date": iso(TODAY - timedelta(days=11)), "status": "nd", "uptime": None}
        assert days[1] == {"date": iso(TODAY - timedelta(days=10)), "status": "mo", "uptime": 50.0}
        assert days[-2:] == [
            {"date": iso(TODAY - timedelta(days=1)), "status": "o", "uptime": 100.0},
            {"date": iso(TODAY), "status": "po", "uptime": 95.0},
        ]
        assert [d["status"] for d in days].count("nd") == 9
        assert len((await api.get("/api/uptime/svc-a")).json()["days"]) == 90

        status = (await api.get("/api/status")).json()
        by_id = {s["serviceId"]: s for s in status["services"]}
        assert set(by_id) == {"svc-a", "svc-b", "gone"}
        assert by_id["svc-a"]["lastStatus"] == "down"
        assert at(by_id["svc-a"]["lastCheckAt"]) == NOW - timedelta(seconds=10)
        assert by_id["svc-b"]["lastCheckAt"] is None and by_id["gone"]["active"] is False
        probers = {(p["proberId"], p["region"]): at(p["lastCheckAt"]) for p in status["probers"]}
        assert probers == {
            ("p-eu", "eu"): NOW - timedelta(seconds=20),
            ("p-us", "us"): NOW - timedelta(seconds=50),
        }

        health = (await api.get("/health")).json()
        assert health["database"] == "up" and health["version"]


def ensure_running(infra: Any) -> None:
    """Start the session's PostgreSQL again unless it already runs."""
    if infra.pg.proc is None or infra.pg.proc.poll() is not None:
        infra.pg.start()


async def timed_get(api: httpx.AsyncClient, url: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    r = await api.get(url)
    return r, time.monotonic() - started


async def test_stale_answers_while_postgres_is_stopped(
    infra: Any, seeded: str, settings: Settings
) -> None:
    async with running_api(settings) as api:
        await eventually(
            lambda: api.get("/health"),
            until=lambda r: r.json()["nats"] == "up",
            what="the api connected to NATS",
        )
        fresh = (await api.get("/api/sla/svc-a?days=7")).json()
        fresh_metrics = (await api.get("/api/metrics/svc-a?days=7")).json()
        infra.pg.stop()
        try:
            r, took = await timed_get(api, "/api/sla/svc-a?days=7")
            assert r.status_code == 200
            assert r.json() == {**fresh, "stale": True}
            assert took < 5, "a stopped database must be noticed quickly"
            again = (await api.get("/api/metrics/svc-a?days=7")).json()
            assert again == {**fresh_metrics, "stale": True}
            assert again["computedAt"] == fresh_metrics["computedAt"]

            never, took = await timed_get(api, "/api/metrics/svc-a?days=8")
            assert never.status_code == 503
            assert never.json()["error"] == "database_unavailable"
            assert took < 5

            health = await api.get("/health")
            assert health.status_code == 200
            assert health.json() | {"version": ""} == {
                "status": "degraded",
                "database": "down",
                "nats": "up",
                "version": "",
            }
            assert (await api.get("/readyz")).status_code == 200  # it can replay answers
        finally:
            ensure_running(infra)
        back = await eventually(
            lambda: api.get("/api/metrics/svc-a?days=8"),
            until=lambda r: r.status_code == 200,
            what="fresh answers after PostgreSQL restarted",
        )
        assert back.json()["stale"] is False and back.json()["totalRequests"] == 400
        assert (await api.get("/health")).json()["status"] == "ok"


async def test_starts_while_postgres_is_down_and_connects_later(
    infra: Any, seeded: str, settings: Settings
) -> None:
    infra.pg.stop()
    try:
        async with running_api(settings) as api:
            health = await api.get("/health")
            assert health.status_code == 200 and health.json()["database"] == "down"
            r = await api.get("/api/metrics/svc-a")
            assert r.status_code == 503 and r.json()["error"] == "database_unavailable"
            assert (await api.get("/readyz")).status_code == 503
            ensure_running(infra)
            ok = await eventually(
                lambda: api.get("/api/metrics/svc-a"),
                until=lambda r: r.status_code == 200,
                what="metrics",
            )
            assert ok.json()["totalRequests"] == 500
    finally:
        ensure_running(infra)


async def test_unmigrated_database_is_a_clear_503(empty_db_url: str, settings: Settings) -> None:
    async with running_api(settings, database_url=empty_db_url) as api:
        r = await api.get("/api/uptime/svc-a")
        assert r.status_code == 503
        assert "make migrate" in r.json()["message"]
        assert (await api.get("/health")).json()["database"] == "down"


async def test_calendar_month_boundaries_badges_and_gauges(db_url: str, settings: Settings) -> None:
    """Rows on both sides of each month boundary: only the month's own days count."""
    first_this = TODAY.replace(day=1)
    last_prev = first_this - timedelta(days=1)
    first_prev = last_prev.replace(day=1)
    last_before = first_prev - timedelta(days=1)
    conn = await asyncpg.connect(db_url)
    try:
        await add_service(conn, "svc-m", 99.5)
        for day, total, failed, down in (
            (last_before, 1000, 1000, 100),  # outside (the month before)
            (first_prev, 100, 0, 0),
            (last_prev, 100, 4, 3),
            (first_this, 1000, 1000, 100),  # outside (this month)
        ):
            await insert(
                conn,
                "api_call_logs",
                service_id="svc-m",
                day=day,
                **rollup(
                    total_checks=100,
                    up_checks=100 - down,
                    down_checks=down,
                    total_requests=total,
                    successful_requests=total - failed,
                    failed_requests=failed,
                    within_threshold=total - failed,
                    timed_requests=total,
                    sum_response_time_ms=100.0 * total,
                    min_response_time_ms=100.0,
                    max_response_time_ms=100.0,
                    latency_hist=hist_of([100.0] * total),
                ),
            )
            status = "o" if failed * 200 <= total else "mo"
            await insert(
                conn,
                "uptime_records",
                service_id="svc-m",
                day=day,
                status=status,
                uptime=100.0 * (total - failed) / total,
                total_requests=total,
                successful_requests=total - failed,
                sla_target=99.5,
            )
    finally:
        await conn.close()
    month = first_prev.strftime("%Y-%m")
    async with running_api(settings) as api:
        r = await api.get("/api/sla/svc-m", params={"month": month})
        assert r.status_code == 200, r.text
        s = r.json()
        assert s["period"] == {
            "days": last_prev.day,
            "start": iso(first_prev),
            "end": iso(last_prev),
            "month": month,
        }
        assert s["currentSLA"] == 98.0  # 196 / 200
        assert s["isBreached"] is True and s["breaches"] == 1  # last_prev: 97 % is mo
        budget = s["errorBudget"]
        assert budget["allowedFailures"] == 1.0  # 200 requests * 0.5 %
        assert budget["usedFailures"] == 4
        assert budget["usedFailedChecks"] == 3
        assert budget["usedDowntimeMinutes"] == 1.5  # 3 down checks * 30 s
        assert budget["allowedDowntimeMinutes"] == round(last_prev.day * 1440 * 0.005, 3)
        both = await api.get("/api/sla/svc-m", params={"month": month, "days": 7})
        assert both.status_code == 422
        future = (first_this + timedelta(days=32)).strftime("%Y-%m")
        assert (await api.get("/api/sla/svc-m", params={"month": future})).status_code == 422

        trend = (
            await api.get("/api/metrics/svc-m/trend", params={"resolution": "1d", "days": 60})
        ).json()
        by_start = {p["start"][:10]: p["requests"] for p in trend["points"] if p["requests"]}
        assert by_start == {
            iso(d): n
            for d, n in (
                (last_before, 1000),
                (first_prev, 100),
                (last_prev, 100),
                (first_this, 1000),
            )
            if d >= TODAY - timedelta(days=59)
        }

        badge = await api.get("/api/badges/svc-m/response-time.svg", params={"days": 90})
        assert badge.status_code == 200 and "100ms" in badge.text
        assert badge.headers["content-type"] == "image/svg+xml"

        scrape = (await api.get("/metrics")).text
        assert 'watch_service_sla_target_percent{service_id="svc-m"} 99.5' in scrape
        in_30d = sum(
            n
            for d, n in (
                (last_before, 1000),
                (first_prev, 100),
                (last_prev, 100),
                (first_this, 1000),
            )
            if d >= TODAY - timedelta(days=29)
        )
        assert f'watch_service_requests{{service_id="svc-m",window="30d"}} {in_30d:.1f}' in scrape


async def test_new_endpoints_replay_stale_answers_while_postgres_is_stopped(
    infra: Any, seeded: str, settings: Settings
) -> None:
    async with running_api(settings) as api:
        month = TODAY.strftime("%Y-%m")
        urls = [
            f"/api/sla/svc-a?month={month}",
            "/api/metrics/svc-a/trend?resolution=1d&days=14",
            "/api/badges/svc-a/uptime.svg?days=7",
            "/api/badges/svc-a/response-time.svg?days=7",
        ]
        fresh = {u: await api.get(u) for u in urls}
        assert all(r.status_code == 200 for r in fresh.values())
        scrape = (await api.get("/metrics")).text
        assert 'watch_service_uptime_percent{service_id="svc-a",window="7d"} 97.5' in scrape
        await asyncio.to_thread(infra.pg.stop)
        try:
            for url in urls[:2]:
                r = await api.get(url)
                assert r.status_code == 200
                assert r.json() == {**fresh[url].json(), "stale": True}
            for url in urls[2:]:
                r = await api.get(url)
                assert r.status_code == 200 and r.text == fresh[url].text
                assert r.headers["x-watch-stale"] == "true"
            never = await api.get("/api/badges/svc-a/uptime.svg?days=8")
            assert never.status_code == 503
            assert never.json()["error"] == "database_unavailable"
            # /metrics keeps the last per-service snapshot rather than failing the scrape
            down = await api.get("/metrics")
            assert down.status_code == 200
            assert 'watch_service_uptime_percent{service_id="svc-a",window="7d"} 97.5' in down.text
        finally:
            await asyncio.to_thread(ensure_running, infra)


async def test_store_percentiles_and_sla_inputs_equal_the_python_merge(db_url: str) -> None:
    """Percentiles found from the store's bucket arrays equal those of the histograms merged
    in Python; the one-query SLA inputs equal the two separate reads."""
    import random

    from services.api import metrics
    from services.api.metrics import Rollup
    from services.api.store import PostgresStore

    rng = random.Random(5)
    rows: list[Rollup] = []
    conn = await asyncpg.connect(db_url)
    try:
        await add_service(conn, "svc-q", 99.9)
        for offset in range(6):
            values = [rng.lognormvariate(4.0 + offset / 5, 0.8) for _ in range(rng.randint(0, 400))]
            row = Rollup(
                total_requests=len(values),
                successful_requests=len(values),
                timed_requests=len(values),
                sum_response_time_ms=sum(values),
                min_response_time_ms=min(values, default=None),
                max_response_time_ms=max(values, default=None),
                latency_hist=hist_of(values),
            )
            rows.append(row)
            cols = {c: getattr(row, c) for c in rollup()}
            day = TODAY - timedelta(days=offset)
            await insert(conn, "api_call_logs", service_id="svc-q", day=day, **cols)
        await insert(conn, "uptime_records", service_id="svc-q", day=TODAY - timedelta(days=40),
                     status="mo", uptime=50.0, sla_target=99.9)  # fmt: skip
    finally:
        await conn.close()
    store = PostgresStore(dsn=db_url, role=None, max_size=1)
    try:
        start = TODAY - timedelta(days=5)
        got = (await store.window_totals(["svc-q"], start, TODAY))["svc-q"]
        assert metrics.percentiles(got) == metrics.percentiles(metrics.combine(rows))
        assert got.quantile_buckets is not None and None not in got.quantile_buckets
        empty = (await store.window_totals(["svc-q"], TODAY, TODAY))["svc-q"]
        assert metrics.percentiles(empty) == metrics.percentiles(rows[0])
        for first, last in (
            (start, TODAY),
            (TODAY - timedelta(days=45), TODAY - timedelta(days=30)),
        ):
            total, records = await store.sla_inputs("svc-q", first, last)
            plain = await store.window_totals(["svc-q"], first, last, histograms=False)
            assert total == plain.get("svc-q")
            assert records == await store.day_records("svc-q", first, last)
        assert len((await store.sla_inputs("svc-q", TODAY - timedelta(days=45), TODAY))[1]) == 1

        async def window(open_from: date) -> Rollup | None:
            return await store.service_window("svc-q", start, TODAY, open_from=open_from)

        # The closed days' merged histogram is reused only while their rows are unchanged.
        for _ in range(2):
            assert await window(TODAY) == got
            assert await window(TODAY - timedelta(days=2)) == got
        assert await store.service_window("svc-q", TODAY, TODAY, open_from=TODAY) == empty
        assert await store.service_window("nope", start, TODAY, open_from=TODAY) is None
        late = [900.0] * 5000  # a late batch for a closed day moves every percentile up
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute(
                "UPDATE api_call_logs SET latency_hist = $1, timed_requests = timed_requests + "
                "5000 WHERE service_id = 'svc-q' AND day = $2",
                json.dumps(histogram.merge([rows[3].latency_hist, hist_of(late)])),
                TODAY - timedelta(days=3),
            )
        finally:
            await conn.close()
        changed = (await store.window_totals(["svc-q"], start, TODAY))["svc-q"]
        assert metrics.percentiles(changed) != metrics.percentiles(got)
        assert await window(TODAY) == changed
        assert await window(TODAY) == changed
    finally:
        await store.close()
