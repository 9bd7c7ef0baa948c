"""The api's HTTP layer with an in-memory store: bodies of 200/401/404/422/503, stale replay."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from services.api.app import create_app
from services.api.metrics import DayRecord, Rollup, combine
from services.api.settings import ApiSettings
from services.api.store import DatabaseUnavailable, ProberSeen, ServiceInfo, ServiceState
from shared import histogram
from shared.settings import Settings

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
TODAY = NOW.date()


class FakeStore:
    """MetricsStore in memory; `down = True` makes every read fail like a stopped database."""

    def __init__(self) -> None:
        self.down = False
        self.services = {
            "svc-a": ServiceInfo("svc-a", "Service A", True, 99.0, 30.0),
            "old": ServiceInfo("old", "Retired", False, 99.9, 30.0),
        }
        self.daily: dict[tuple[str, date], Rollup] = {}
        self.hourly: dict[tuple[str, datetime], Rollup] = {}
        self.records: dict[tuple[str, date], DayRecord] = {}

    def _check(self) -> None:
        if self.down:
            raise DatabaseUnavailable("cannot reach PostgreSQL (ConnectionRefusedError)")

    async def ping(self) -> bool:
        return not self.down

    async def get_service(self, service_id: str) -> ServiceInfo | None:
        self._check()
        return self.services.get(service_id)

    async def list_services(self, *, active_only: bool) -> list[ServiceInfo]:
        self._check()
        return [s for _, s in sorted(self.services.items()) if s.active or not active_only]

    async def window_totals(
        self,
        service_ids: Sequence[str],
        start: date,
        end: date,
        *,
        histograms: bool = True,
    ) -> dict[str, Rollup]:
        self._check()
        out = {}
        for sid in service_ids:
            rows = [r for (s, d), r in self.daily.items() if s == sid and start <= d <= end]
            if rows:
                total = combine(rows)
                out[sid] = total if histograms else replace(total, latency_hist={})
        return out

    async def daily_by_day(
        self, service_ids: Sequence[str], start: date, end: date
    ) -> dict[str, dict[date, Rollup]]:
        self._check()
        return {
            sid: {d: r for (s, d), r in self.daily.items() if s == sid and start <= d <= end}
            for sid in service_ids
        }

    async def hourly_rollups(
        self, service_id: str, start: datetime, end: datetime
    ) -> dict[datetime, Rollup]:
        self._check()
        return {h: r for (s, h), r in self.hourly.items() if s == service_id and start <= h < end}

    async def day_records(self, service_id: str, start: date, end: date) -> dict[date, DayRecord]:
        self._check()
        return {d: r for (s, d), r in self.records.items() if s == service_id and start <= d <= end}

    async def service_window(
        self, service_id: str, start: date, end: date, *, open_from: date
    ) -> Rollup | None:
        return (await self.window_totals([service_id], start, end)).get(service_id)

    async def sla_inputs(
        self, service_id: str, start: date, end: date
    ) -> tuple[Rollup | None, dict[date, DayRecord]]:
        totals = await self.window_totals([service_id], start, end, histograms=False)
        return totals.get(service_id), await self.day_records(service_id, start, end)

    async def service_states(self) -> list[ServiceState]:
        self._check()
        return [ServiceState("svc-a", "Service A", True, "down", NOW - timedelta(seconds=5), True)]

    async def probers_seen(self, since: datetime) -> list[ProberSeen]:
        self._check()
        return [ProberSeen("p-1", "eu", NOW - timedelta(seconds=5))]


@pytest.fixture
def store() -> FakeStore:
    s = FakeStore()
    s.daily[("svc-a", TODAY)] = Rollup(
        total_checks=10,
        degraded_checks=1,
        total_requests=10,
        successful_requests=9,
        failed_requests=1,
        within_threshold=8,
        timed_requests=10,
        sum_response_time_ms=1000.0,
        min_response_time_ms=50.0,
        max_response_time_ms=200.0,
        errors={"timeout": 1},
    )
    s.daily[("svc-a", TODAY - timedelta(days=40))] = Rollup(total_requests=5, failed_requests=5)
    s.records[("svc-a", TODAY)] = DayRecord(TODAY, "mo", 90.0)
    s.hourly[("svc-a", NOW.replace(minute=0))] = Rollup(
        total_requests=4,
        successful_requests=3,
        failed_requests=1,
        timed_requests=4,
        sum_response_time_ms=400.0,
        min_response_time_ms=100.0,
        max_response_time_ms=100.0,
        latency_hist={str(histogram.bucket_of(100.0)): 4},
    )
    return s


def make_client(store: FakeStore, **settings: object) -> httpx.AsyncClient:
    app = create_app(
        settings=Settings(nats_url="nats://127.0.0.1:1", **settings),  # type: ignore[arg-type]
        store=store,
        clock=lambda: NOW,
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


@pytest.fixture
async def client(store: FakeStore) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(store) as c:
        yield c


@pytest.mark.parametrize(
    ("url", "param", "got", "allowed"),
    [
        ("/api/metrics/svc-a?days=0", "days", "0", "days must be an integer from 1 to 3650"),
        ("/api/metrics/svc-a?days=abc", "days", "abc", "days must be an integer from 1 to 3650"),
        (
            "/api/metrics/svc-a?days=100000",
            "days",
            "100000",
            "days must be an integer from 1 to 3650",
        ),
        ("/api/metrics?days=-1", "days", "-1", "days must be an integer from 1 to 3650"),
        ("/api/sla/svc-a?days=1.5", "days", "1.5", "days must be an integer from 1 to 3650"),
        ("/api/uptime/svc-a?days=3651", "days", "3651", "days must be an integer from 1 to 3650"),
        (
            "/api/metrics/svc-a/trend?hours=0",
            "hours",
            "0",
            "hours must be an integer from 1 to 8784",
        ),
    ],
)
async def test_bad_parameters_get_422_saying_what_is_allowed(
    client: httpx.AsyncClient, url: str, param: str, got: str, allowed: str
) -> None:
    r = await client.get(url)
    assert r.status_code == 422
    assert r.json() == {
        "error": "invalid_parameter",
        "detail": [{"param": param, "message": allowed, "got": got}],
    }


@pytest.mark.parametrize(
    "url",
    ["/api/metrics/nope", "/api/sla/nope", "/api/uptime/nope", "/api/metrics/nope/trend"],
)
async def test_unknown_service_is_404(client: httpx.AsyncClient, url: str) -> None:
    r = await client.get(url)
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "message": "unknown service 'nope'"}


async def test_unknown_path_is_a_json_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/nothing")
    assert r.status_code == 404 and r.json()["error"] == "not_found"


async def test_metrics_body_is_camel_case_over_the_window(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/metrics/svc-a", params={"days": 30})
    assert r.status_code == 200
    body = r.json()
    assert body["period"] == {
        "days": 30,
        "start": "2026-02-09",
        "end": "2026-03-10",
        "month": None,
    }
    # the row 40 days ago is outside the window
    assert body["totalRequests"] == 10 and body["failedRequests"] == 1
    assert body["uptime"] == 90.0 and body["errorRate"] == 10.0
    assert body["avgResponseTime"] == 100.0
    assert body["errorsByType"]["timeout"] == 1
    assert body["stale"] is False and body["computedAt"] == "2026-03-10T12:30:00Z"
    r60 = await client.get("/api/metrics/svc-a", params={"days": 60})
    assert r60.json()["totalRequests"] == 15


async def test_metrics_list_has_active_services_only(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/metrics")).json()
    assert body["period"]["days"] == 7
    assert [s["serviceId"] for s in body["services"]] == ["svc-a"]


async def test_sla_body(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/sla/svc-a")).json()
    assert body["slaTarget"] == 99.0
    assert body["currentSLA"] == 90.0
    assert body["responseTimeSLA"] == 80.0
    assert body["breaches"] == 1
    assert body["isBreached"] is True
    assert body["errorBudget"] == {
        "allowedFailures": 0.1,
        "usedFailures": 1,
        "remainingFailures": -0.9,
        "remainingPercent": -900.0,
        "allowedFailedChecks": 0.1,
        "usedFailedChecks": 0,
        "remainingFailedChecks": 0.1,
        "checkIntervalSeconds": 30.0,
        "allowedDowntimeMinutes": 432.0,  # 30 days * 1440 * 1 %
        "usedDowntimeMinutes": 0.0,
        "remainingDowntimeMinutes": 432.0,
    }
    assert body["accounting"]["uptimeBasis"] == "requests"
    assert body["accounting"]["majorOutageBelow"] == 95.0


async def test_trend_and_uptime_bodies(client: httpx.AsyncClient) -> None:
    trend = (await client.get("/api/metrics/svc-a/trend", params={"hours": 2})).json()
    assert (trend["resolution"], trend["hours"], trend["days"]) == ("1h", 2, None)
    assert trend["points"] == [
        {
            "start": "2026-03-10T11:00:00Z",
            "hour": "2026-03-10T11:00:00Z",
            "requests": 0,
            "uptime": None,
            "errorRate": None,
            "avgResponseTime": None,
            "p95ResponseTime": None,
            "p99ResponseTime": None,
        },
        {
            "start": "2026-03-10T12:00:00Z",
            "hour": "2026-03-10T12:00:00Z",
            "requests": 4,
            "uptime": 75.0,
            "errorRate": 25.0,
            "avgResponseTime": 100.0,
            "p95ResponseTime": 100.0,
            "p99ResponseTime": 100.0,
        },
    ]
    uptime = (await client.get("/api/uptime/svc-a", params={"days": 2})).json()
    assert uptime["days"] == [
        {"date": "2026-03-09", "status": "nd", "uptime": None},
        {"date": "2026-03-10", "status": "mo", "uptime": 90.0},
    ]


async def test_stale_answer_while_the_database_is_down(
    client: httpx.AsyncClient, store: FakeStore
) -> None:
    fresh = (await client.get("/api/metrics/svc-a?days=30")).json()
    store.down = True
    r = await client.get("/api/metrics/svc-a?days=30")
    assert r.status_code == 200
    stale = r.json()
    assert stale["stale"] is True
    assert stale == {**fresh, "stale": True}
    never = await client.get("/api/metrics/svc-a?days=31")
    assert never.status_code == 503
    assert never.json()["error"] == "database_unavailable"
    assert "no earlier answer" in never.json()["message"]
    health = await client.get("/health")
    assert health.status_code == 200
    assert health.json()["database"] == "down" and health.json()["status"] == "degraded"
    store.down = False
    assert (await client.get("/api/metrics/svc-a?days=30")).json()["stale"] is False


async def test_readyz_needs_the_database_or_something_to_replay(
    client: httpx.AsyncClient, store: FakeStore
) -> None:
    store.down = True
    assert (await client.get("/readyz")).status_code == 503
    store.down = False
    await client.get("/api/uptime/svc-a")
    store.down = True
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["staleAnswers"] == 1


async def test_status_is_stale_but_pipeline_is_unknown_without_nats(
    client: httpx.AsyncClient, store: FakeStore
) -> None:
    body = (await client.get("/api/status")).json()
    assert body["services"] == [
        {
            "serviceId": "svc-a",
            "name": "Service A",
            "active": True,
            "lastCheckAt": "2026-03-10T12:29:55Z",
            "lastStatus": "down",
            "slaBreached": True,
        }
    ]
    assert body["probers"] == [
        {"proberId": "p-1", "region": "eu", "lastCheckAt": "2026-03-10T12:29:55Z"}
    ]
    assert body["pipeline"] == {"recorder": None, "aggregator": None}
    store.down = True
    assert (await client.get("/api/status")).json()["stale"] is True


async def test_health_check_needs_the_token_when_one_is_set(store: FakeStore) -> None:
    async with make_client(store, api_token="s3cret") as client:
        r = await client.post("/api/health-check")
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"] == "unauthorized"
        bad = await client.post("/api/health-check", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        ok = {"Authorization": "Bearer s3cret"}
        unknown = await client.post("/api/health-check?serviceId=nope", headers=ok)
        assert unknown.status_code == 404
        assert unknown.json() == {"error": "not_found", "message": "unknown service 'nope'"}
        retired = await client.post("/api/health-check?serviceId=old", headers=ok)
        assert retired.status_code == 404
        # NATS was never connected (no lifespan here): a clear 503, not a hang.
        r = await client.post("/api/health-check?serviceId=svc-a", headers=ok)
        assert r.status_code == 503
        assert r.json()["error"] == "prober_unavailable"
        assert "NATS" in r.json()["message"]


async def test_openapi_document(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert spec["info"]["title"] == "Watch Server API"
    assert spec["info"]["version"]
    assert {
        "/health",
        "/api/metrics",
        "/api/metrics/{serviceId}",
        "/api/sla/{serviceId}",
        "/api/metrics/{serviceId}/trend",
        "/api/uptime/{serviceId}",
        "/api/status",
        "/api/health-check",
    } <= set(spec["paths"])
    sla = spec["components"]["schemas"]["SlaReport"]
    assert {"currentSLA", "responseTimeSLA", "isBreached", "errorBudget"} <= set(sla["properties"])
    assert sla["examples"][0]["currentSLA"] == 99.2
    responses = spec["paths"]["/api/metrics/{serviceId}"]["get"]["responses"]
    assert {"200", "404", "422", "503"} <= set(responses)
    assert (await client.get("/docs")).status_code == 200


async def test_prometheus_counts_requests_per_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/api/metrics/svc-a")
    await client.get("/api/metrics/nope")
    text = (await client.get("/metrics")).text
    assert (
        'watch_api_requests_total{method="GET",route="/api/metrics/{serviceId}",status="200"} 1.0'
        in text
    )
    assert 'route="/api/metrics/{serviceId}",status="404"} 1.0' in text
    assert "watch_api_request_duration_seconds_bucket" in text


@pytest.mark.parametrize(
    ("url", "param", "got", "message"),
    [
        (
            "/api/sla/svc-a?month=2026-13",
            "month",
            "2026-13",
            "month must be a calendar month YYYY-MM from 2000-01 to the current month",
        ),
        (
            "/api/sla/svc-a?month=2026-4",
            "month",
            "2026-4",
            "month must be a calendar month YYYY-MM from 2000-01 to the current month",
        ),
        (
            "/api/sla/svc-a?month=2026-04",  # after the current month (NOW is 2026-03)
            "month",
            "2026-04",
            "month must be a calendar month YYYY-MM from 2000-01 to the current month",
        ),
        (
            "/api/metrics/svc-a?month=1999-12",
            "month",
            "1999-12",
            "month must be a calendar month YYYY-MM from 2000-01 to the current month",
        ),
        (
            "/api/sla/svc-a?month=2026-02&days=30",
            "month",
            "2026-02",
            "give either days or month, not both",
        ),
        (
            "/api/metrics/svc-a/trend?resolution=1w",
            "resolution",
            "1w",
            "resolution must be 1h or 1d",
        ),
        (
            "/api/metrics/svc-a/trend?resolution=1h&days=3",
            "days",
            "3",
            "days goes with resolution=1d; with resolution=1h use hours (1 to 8784)",
        ),
        (
            "/api/metrics/svc-a/trend?resolution=1d&hours=3",
            "hours",
            "3",
            "hours goes with resolution=1h; with resolution=1d use days (1 to 3650)",
        ),
        (
            "/api/metrics/svc-a/trend?resolution=1d&days=0",
            "days",
            "0",
            "days must be an integer from 1 to 3650",
        ),
        (
            "/api/metrics/Bad_Id",
            "serviceId",
            "Bad_Id",
            "serviceId must be a catalog slug: 1 to 64 characters a-z, 0-9 and '-', "
            "starting with a letter or digit",
        ),
        (
            "/api/badges/svc-a/uptime.svg?days=0",
            "days",
            "0",
            "days must be an integer from 1 to 3650",
        ),
    ],
)
async def test_new_parameters_get_422_saying_what_is_allowed(
    client: httpx.AsyncClient, url: str, param: str, got: str, message: str
) -> None:
    r = await client.get(url)
    assert r.status_code == 422, r.text
    assert r.json() == {
        "error": "invalid_parameter",
        "detail": [{"param": param, "message": message, "got": got}],
    }


async def test_sla_for_a_calendar_month(client: httpx.AsyncClient, store: FakeStore) -> None:
    # February 2026 has 28 days: the last day and the first of March fall on either side.
    store.daily[("svc-a", date(2026, 2, 28))] = Rollup(
        total_checks=100, down_checks=4, total_requests=100, successful_requests=96,
        failed_requests=4,
    )  # fmt: skip
    store.daily[("svc-a", date(2026, 2, 1))] = Rollup(
        total_checks=100, total_requests=100, successful_requests=100
    )
    store.daily[("svc-a", date(2026, 1, 31))] = Rollup(total_requests=50, failed_requests=50)
    store.records[("svc-a", date(2026, 2, 28))] = DayRecord(date(2026, 2, 28), "mo", 96.0)
    store.records[("svc-a", date(2026, 3, 1))] = DayRecord(date(2026, 3, 1), "mo", 0.0)
    body = (await client.get("/api/sla/svc-a?month=2026-02")).json()
    assert body["period"] == {
        "days": 28,
        "start": "2026-02-01",
        "end": "2026-02-28",
        "month": "2026-02",
    }
    assert body["currentSLA"] == 98.0  # 196 / 200: January 31 and March are outside
    assert body["breaches"] == 1
    budget = body["errorBudget"]
    assert budget["allowedDowntimeMinutes"] == 403.2  # 28 * 1440 * 1 %
    assert budget["usedDowntimeMinutes"] == 2.0  # 4 down checks * 30 s
    assert budget["remainingDowntimeMinutes"] == 401.2
    assert (budget["allowedFailedChecks"], budget["usedFailedChecks"]) == (2.0, 4)
    metrics_month = (await client.get("/api/metrics/svc-a?month=2026-02")).json()
    assert metrics_month["totalRequests"] == 200
    current = (await client.get("/api/uptime/svc-a?month=2026-03")).json()
    assert [d["date"] for d in current["days"]][:1] == ["2026-03-01"]
    assert len(current["days"]) == 31 and current["days"][0]["status"] == "mo"


async def test_daily_trend(client: httpx.AsyncClient) -> None:
    trend = (await client.get("/api/metrics/svc-a/trend?resolution=1d&days=3")).json()
    assert (trend["resolution"], trend["hours"], trend["days"]) == ("1d", None, 3)
    assert [p["start"] for p in trend["points"]] == [
        "2026-03-08T00:00:00Z",
        "2026-03-09T00:00:00Z",
        "2026-03-10T00:00:00Z",
    ]
    today = trend["points"][-1]
    assert (today["requests"], today["uptime"], today["errorRate"]) == (10, 90.0, 10.0)
    assert today["avgResponseTime"] == 100.0
    assert trend["points"][0]["requests"] == 0 and trend["points"][0]["uptime"] is None


async def test_badges(client: httpx.AsyncClient, store: FakeStore) -> None:
    r = await client.get("/api/badges/svc-a/uptime.svg?days=30")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/svg+xml"
    assert r.headers["cache-control"] == "public, max-age=60"
    assert "uptime 30d" in r.text and "90%" in r.text
    assert 'fill="#e05d44"' in r.text  # 90 % is under MAJOR_OUTAGE_BELOW (95): red
    rt = await client.get("/api/badges/svc-a/response-time.svg")
    assert "response time 30d" in rt.text and "100ms" in rt.text and 'fill="#4c1"' in rt.text
    empty = await client.get("/api/badges/old/uptime.svg?days=7")
    assert "no data" in empty.text and 'fill="#9f9f9f"' in empty.text
    missing = await client.get("/api/badges/nope/uptime.svg")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    store.down = True
    stale = await client.get("/api/badges/svc-a/uptime.svg?days=30")
    assert stale.status_code == 200 and stale.headers["x-watch-stale"] == "true"
    assert stale.text == r.text
    never = await client.get("/api/badges/svc-a/response-time.svg?days=2")
    assert never.status_code == 503


async def test_manual_checks_are_rate_limited_per_client(store: FakeStore) -> None:
    async with make_client(store, api_token="t") as client:
        auth = {"Authorization": "Bearer t"}
        # no prober: each allowed call is a 503, the 4th in a burst of 3 is a 429
        codes = [(await client.post("/api/health-check", headers=auth)).status_code for _ in "123"]
        assert codes == [503, 503, 503]
        limited = await client.post("/api/health-check", headers=auth)
        assert limited.status_code == 429
        assert limited.json()["error"] == "rate_limited"
        assert int(limited.headers["retry-after"]) == 10  # 6 per minute: one every 10 s
        # a caller without the token is refused before it can spend the budget
        assert (await client.post("/api/health-check")).status_code == 401


async def test_cors_only_for_configured_origins(store: FakeStore) -> None:
    async with make_client(store) as plain:
        r = await plain.get("/api/status", headers={"Origin": "https://dash.example.com"})
        assert "access-control-allow-origin" not in r.headers
    app = create_app(
        settings=Settings(nats_url="nats://127.0.0.1:1"),
        api_settings=ApiSettings(cors_origins="https://dash.example.com, http://localhost:5173"),
        store=store,
        clock=lambda: NOW,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        ok = await client.get("/api/metrics/svc-a", headers={"Origin": "http://localhost:5173"})
        assert ok.headers["access-control-allow-origin"] == "http://localhost:5173"
        other = await client.get("/api/metrics/svc-a", headers={"Origin": "https://evil.test"})
        assert "access-control-allow-origin" not in other.headers
        pre = await client.options(
            "/api/health-check",
            headers={
                "Origin": "https://dash.example.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "https://dash.example.com"
        assert "POST" in pre.headers["access-control-allow-methods"]
        err = await client.get("/api/metrics/nope", headers={"Origin": "http://localhost:5173"})
        assert err.status_code == 404
        assert err.headers["access-control-allow-origin"] == "http://localhost:5173"


async def test_prometheus_per_service_gauges_are_cached(store: FakeStore) -> None:
    async with make_client(store) as client:
        text = (await client.get("/metrics")).text
        assert 'watch_service_uptime_percent{service_id="svc-a",window="1d"} 90.0' in text
        # the row 40 days ago is outside every window
        assert 'watch_service_requests{service_id="svc-a",window="30d"} 10.0' in text
        assert (
            'watch_service_response_time_seconds{service_id="svc-a",stat="avg",window="7d"} 0.1'
            in text
        )
        assert 'watch_service_sla_target_percent{service_id="svc-a"} 99.0' in text
        assert 'watch_service_up{service_id="svc-a"} 0.0' in text
        assert 'service_id="old"' not in text  # inactive services are not exported
        store.daily[("svc-a", TODAY)] = Rollup(total_requests=1, successful_requests=1)
        again = (await client.get("/metrics")).text
        assert 'watch_service_uptime_percent{service_id="svc-a",window="1d"} 90.0' in again
        store.down = True  # the last snapshot is still served
        down = (await client.get("/metrics")).text
        assert 'watch_service_uptime_percent{service_id="svc-a",window="1d"} 90.0' in down


async def test_openapi_documents_the_new_endpoints(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert {
        "/api/badges/{serviceId}/uptime.svg",
        "/api/badges/{serviceId}/response-time.svg",
    } <= set(spec["paths"])
    badge = spec["paths"]["/api/badges/{serviceId}/uptime.svg"]["get"]["responses"]["200"]
    assert "image/svg+xml" in badge["content"]
    sla_params = {p["name"] for p in spec["paths"]["/api/sla/{serviceId}"]["get"]["parameters"]}
    assert {"serviceId", "days", "month"} <= sla_params
    trend = spec["paths"]["/api/metrics/{serviceId}/trend"]["get"]["parameters"]
    assert {"resolution", "hours", "days"} <= {p["name"] for p in trend}
    post = spec["paths"]["/api/health-check"]["post"]["responses"]
    assert {"401", "429", "503"} <= set(post)
    schemas = spec["components"]["schemas"]
    assert schemas["SlaReport"]["examples"][0]["accounting"]["uptimeBasis"] == "requests"
    assert "allowedDowntimeMinutes" in schemas["ErrorBudget"]["properties"]


@pytest.mark.parametrize("path", ["/api/metrics/svc-a", "/api/sla/svc-a"])
async def test_the_fast_read_answers_exactly_as_the_documented_route(
    client: httpx.AsyncClient, path: str
) -> None:
    # `days=7` alone takes the fast route; an extra parameter (ignored by FastAPI) or a
    # non-canonical number sends the same question through the documented FastAPI route.
    fast = await client.get(f"{path}?days=7")
    for other in (f"{path}?days=7&extra=1", f"{path}?days=07"):
        documented = await client.get(other)
        assert documented.status_code == fast.status_code == 200
        assert documented.content == fast.content
        assert documented.headers["content-type"] == fast.headers["content-type"]
    assert (await client.get(path)).json() == (await client.get(f"{path}?days=30")).json()
    for bad, status in (("?days=0", 422), ("?days=99999", 422), ("?days=x", 422)):
        assert (await client.get(path + bad)).status_code == status
    assert (await client.get(path.replace("svc-a", "nope") + "?days=7")).status_code == 404
    assert (await client.get(path.replace("svc-a", "Bad_Id"))).status_code == 422
