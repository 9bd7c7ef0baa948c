"""The aggregator against real JetStream and PostgreSQL: exact rollups from a known truth,
exactly-once under replays, status and SLA events, dead letters, a PostgreSQL outage."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from nats.js import JetStreamContext

from services.aggregator.service import Aggregator
from shared.events import (
    DLQ_CONSUMER_HEADER,
    DLQ_REASON_HEADER,
    DLQ_SUBJECT_HEADER,
    CheckCompleted,
    check_subject,
)
from shared.settings import Settings
from tests.factories import make_check_completed, make_endpoint_result
from tests.jetstream import jetstream
from tests.polling import eventually

TODAY = datetime.now(UTC).date()
YESTERDAY = TODAY - timedelta(days=1)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Aggregator]:
    agg = Aggregator(settings=settings)
    await agg.start()
    try:
        yield agg
    finally:
        await agg.stop()


async def publish(js: JetStreamContext, checks: list[CheckCompleted], prefix: str = "") -> None:
    for check in checks:
        ack = await js.publish(
            check_subject(check.service_id),
            check.to_wire(),
            headers={"Nats-Msg-Id": f"{prefix}{check.check_id}"},
        )
        assert not ack.duplicate


def metric(agg: Aggregator, name: str, **labels: str) -> float:
    return agg.metrics.registry.get_sample_value(name, labels or None) or 0.0


async def wait_applied(agg: Aggregator, n: int, name: str = "checks_applied_total") -> None:
    await eventually(lambda: _value(agg, name), until=lambda v: v >= n, what=f"{name} >= {n}")


async def _value(agg: Aggregator, name: str) -> float:
    return metric(agg, name)


async def fetch_all(js: JetStreamContext, subject: str) -> list[Any]:
    """Every message stored on a subject, oldest first."""
    sub = await js.pull_subscribe(subject, stream=None)
    out: list[Any] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(100, timeout=0.5)
            except TimeoutError:
                return out
            for m in msgs:
                await m.ack()
            out += msgs
    finally:
        await sub.unsubscribe()


async def rows(db_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def add_service(db_url: str, service_id: str, sla_target: float) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            """INSERT INTO services (id, name, interval_seconds, timeout_ms, sla_target, defined_at)
               VALUES ($1, $1, 30, 10000, $2, now())""",
            service_id,
            sla_target,
        )
    finally:
        await conn.close()


async def settled(js: JetStreamContext) -> None:
    """Wait until the aggregator's consumer has acked everything it was given."""

    async def pending() -> tuple[int, int]:
        info = await js.consumer_info("WATCH_CHECKS", "aggregator")
        return info.num_ack_pending, info.num_pending

    await eventually(pending, until=lambda p: p == (0, 0), what="consumer settled")


# --- the truth: a known set of checks --------------------------------------------------------


def truth_checks() -> list[CheckCompleted]:
    """svc-a: yesterday 100 calls / 3 failed over 4 hours, today 50 calls / 0 failed;
    svc-b (not in `services`): yesterday 20 checks x 2 calls, 4 failed (one a timeout)."""
    checks = []
    for i in range(100):
        failed = i in (10, 50, 90)
        checks.append(
            make_check_completed(
                service_id="svc-a",
                started_at=at(YESTERDAY, 8 + i // 25, i % 25),
                status="down" if failed else "up",
                endpoints=[
                    make_endpoint_result(
                        status_code=500 if failed else 200,
                        ok=not failed,
                        error_type="http_status" if failed else None,
                        response_time_ms=float(10 + i),
                        latency_threshold_ms=50.0,
                    )
                ],
            )
        )
    for i in range(50):
        checks.append(
            make_check_completed(
                service_id="svc-a",
                started_at=at(TODAY, 0, i),
                endpoints=[make_endpoint_result(response_time_ms=100.0 + i)],
            )
        )
    for i in range(20):
        calls = [make_endpoint_result(response_time_ms=20.0)]
        if i < 3:
            calls.append(
                make_endpoint_result(
                    status_code=502, ok=False, error_type="http_status", response_time_ms=5.0
                )
            )
        elif i == 3:
            calls.append(
                make_endpoint_result(
                    status_code=None, ok=False, error_type="timeout", response_time_ms=10_000.0
                )
            )
        else:
            calls.append(make_endpoint_result(response_time_ms=30.0))
        checks.append(
            make_check_completed(
                service_id="svc-b",
                started_at=at(YESTERDAY, 23, 59),
                status="down" if i <= 3 else "up",
                endpoints=calls,
            )
        )
    return checks


TRUTH_ONLY = "WHERE service_id IN ('svc-a', 'svc-b')"


async def assert_rollups_equal_truth(db_url: str) -> None:
    daily = {
        (r["service_id"], r["day"]): r
        for r in await rows(db_url, f"SELECT * FROM api_call_logs {TRUTH_ONLY}")
    }
    assert set(daily) == {("svc-a", YESTERDAY), ("svc-a", TODAY), ("svc-b", YESTERDAY)}

    a1 = daily[("svc-a", YESTERDAY)]
    assert (a1["total_checks"], a1["up_checks"], a1["down_checks"], a1["degraded_checks"]) == (
        100,
        97,
        3,
        0,
    )
    assert (a1["total_requests"], a1["successful_requests"], a1["failed_requests"]) == (100, 97, 3)
    # times 10..109 ms, threshold 50 ms: successful calls of 10..50 ms (i = 0..40 but not 10)
    assert a1["within_threshold"] == 40
    assert a1["timed_requests"] == 100
    assert a1["sum_response_time_ms"] == sum(range(10, 110))
    assert (a1["min_response_time_ms"], a1["max_response_time_ms"]) == (10.0, 109.0)
    assert a1["errors"] == {"http_status": 3}
    assert sum(a1["latency_hist"].values()) == 100

    a2 = daily[("svc-a", TODAY)]
    assert (a2["total_requests"], a2["successful_requests"], a2["failed_requests"]) == (50, 50, 0)
    assert a2["sum_response_time_ms"] == sum(100 + i for i in range(50))
    assert (a2["min_response_time_ms"], a2["max_response_time_ms"]) == (100.0, 149.0)
    assert a2["errors"] == {}

    b1 = daily[("svc-b", YESTERDAY)]
    assert (b1["total_checks"], b1["down_checks"], b1["up_checks"]) == (20, 4, 16)
    assert (b1["total_requests"], b1["successful_requests"], b1["failed_requests"]) == (40, 36, 4)
    assert b1["timed_requests"] == 39  # the timeout got no response
    assert b1["sum_response_time_ms"] == 20 * 20.0 + 3 * 5.0 + 16 * 30.0
    assert (b1["min_response_time_ms"], b1["max_response_time_ms"]) == (5.0, 30.0)
    assert b1["errors"] == {"http_status": 3, "timeout": 1}

    hourly = {
        (r["service_id"], r["hour"]): r
        for r in await rows(db_url, f"SELECT * FROM api_call_logs_hourly {TRUTH_ONLY}")
    }
    assert len(hourly) == 6
    for h in range(4):
        row = hourly[("svc-a", at(YESTERDAY, 8 + h))]
        assert row["total_requests"] == 25
        assert row["failed_requests"] == (1 if h in (0, 2, 3) else 0)
    assert hourly[("svc-a", at(TODAY, 0))]["total_requests"] == 50
    assert hourly[("svc-b", at(YESTERDAY, 23))]["failed_requests"] == 4

    uptime = {
        (r["service_id"], r["day"]): (
            r["status"],
            r["uptime"],
            r["sla_target"],
            r["total_requests"],
        )
        for r in await rows(db_url, f"SELECT * FROM uptime_records {TRUTH_ONLY}")
    }
    assert uptime == {
        ("svc-a", YESTERDAY): ("po", 97.0, 99.9, 100),  # 97 % under 99.9, at least 95
        ("svc-a", TODAY): ("o", 100.0, 99.9, 50),
        ("svc-b", YESTERDAY): ("mo", 90.0, 99.9, 40),  # not in services: the default target
    }


async def test_rollups_equal_the_truth_and_a_replay_changes_nothing(settings: Settings) -> None:
    await add_service(settings.database_url, "svc-a", 99.9)
    checks = truth_checks()
    async with jetstream(settings) as js, running(settings) as agg:
        await publish(js, checks)
        await wait_applied(agg, len(checks))
        await assert_rollups_equal_truth(settings.database_url)

        # The same checks again under other message ids: JetStream stores them, we skip them.
        await publish(js, checks[::7], prefix="replay-")
        await wait_applied(agg, len(checks[::7]), "duplicates_skipped_total")
        await assert_rollups_equal_truth(settings.database_url)
        assert metric(agg, "checks_applied_total") == len(checks)
        applied = await rows(settings.database_url, "SELECT count(*) AS n FROM aggregator_applied")
        assert applied[0]["n"] == len(checks)


async def test_status_changes_are_published_once_per_transition(settings: Settings) -> None:
    base = datetime.now(UTC) - timedelta(minutes=30)
    statuses = ["up", "up", "down", "down", "degraded", "up"]
    checks = [
        make_check_completed(
            service_id="svc-s",
            status=s,
            started_at=base + timedelta(minutes=i),
            endpoints=[
                make_endpoint_result(
                    ok=s != "down",
                    status_code=200 if s != "down" else 500,
                    error_type="http_status" if s == "down" else None,
                )
            ],
        )
        for i, s in enumerate(statuses)
    ]
    async with jetstream(settings) as js, running(settings) as agg:
        await publish(js, checks[:3])  # up, up, down
        await wait_applied(agg, 3)
        await publish(js, checks[3:])  # down, degraded, up
        await publish(js, [checks[2]], prefix="again-")  # a replay must not re-announce
        await wait_applied(agg, 6)
        await wait_applied(agg, 1, "duplicates_skipped_total")

        async def published() -> float:
            return metric(agg, "events_published_total", type="StatusChanged")

        await eventually(published, until=lambda n: n >= 4, what="4 status events")
        events = [json.loads(m.data) for m in await fetch_all(js, "watch.event.status.svc-s")]
    assert [(e["from"], e["to"]) for e in events] == [
        (None, "up"),
        ("up", "down"),
        ("down", "degraded"),
        ("degraded", "up"),
    ]
    assert [e["checkId"] for e in events] == [str(checks[i].check_id) for i in (0, 2, 4, 5)]
    assert all(e["serviceId"] == "svc-s" and e["schemaVersion"] == 1 for e in events)
    outbox = await rows(settings.database_url, "SELECT count(*) AS n FROM event_outbox")
    assert outbox[0]["n"] == 0


async def test_up_down_up_gives_three_events(settings: Settings) -> None:
    base = datetime.now(UTC) - timedelta(minutes=5)
    checks = [
        make_check_completed(service_id="svc-t", status=s, started_at=base + timedelta(seconds=i))
        for i, s in enumerate(["up", "down", "up"])
    ]
    async with jetstream(settings) as js, running(settings) as agg:
        await publish(js, checks)  # most likely one batch: still one event per transition
        await wait_applied(agg, 3)
        await eventually(
            lambda: _value(agg, "events_published_total") if False else _events(agg),
            until=lambda n: n >= 3,
            what="3 events",
        )
        events = [json.loads(m.data) for m in await fetch_all(js, "watch.event.status.svc-t")]
    assert [(e["from"], e["to"]) for e in events] == [(None, "up"), ("up", "down"), ("down", "up")]


async def _events(agg: Aggregator) -> float:
    return metric(agg, "events_published_total", type="StatusChanged")


def _region_checks(service_id: str) -> list[CheckCompleted]:
    """Three regions checking at the same due times; eu alone fails first, then us too."""
    base = datetime.now(UTC) - timedelta(minutes=5)
    rounds = [("up", "up", "up"), ("down", "up", "up"), ("down", "down", "up"), ("up", "up", "up")]
    return [
        make_check_completed(
            service_id=service_id,
            region=region,
            status=status,
            started_at=base + timedelta(seconds=30 * i + j),  # regions a second apart
        )
        for i, statuses in enumerate(rounds)
        for j, (region, status) in enumerate(zip(("eu", "us", "ap"), statuses, strict=True))
    ]


@pytest.mark.parametrize("quorum", [True, False])
async def test_status_across_regions_needs_half_of_them_down(
    settings: Settings, quorum: bool
) -> None:
    settings = settings.model_copy(update={"status_quorum": quorum})
    await add_service(settings.database_url, "svc-q", 99.9)  # a 30 s interval
    checks = _region_checks("svc-q")
    async with jetstream(settings) as js, running(settings) as agg:
        await publish(js, checks[:4])  # the first batch or two ...
        await wait_applied(agg, 4)
        await publish(js, checks[4:])  # ... and the rest later: the regions' state persists
        await publish(js, checks[5:7], prefix="again-")  # replays change nothing
        await wait_applied(agg, len(checks))
        await settled(js)
        assert metric(agg, "checks_applied_total") == len(checks)
        expected = 3 if quorum else 5
        await eventually(lambda: _events(agg), until=lambda n: n >= expected, what="status events")
        events = [json.loads(m.data) for m in await fetch_all(js, "watch.event.status.svc-q")]
    moves = [(e["from"], e["to"]) for e in events]
    if quorum:
        # eu's failure alone (1 of 3) is not an outage; eu + us (2 of 3) is.
        assert moves == [(None, "up"), ("up", "down"), ("down", "up")]
        assert events[1]["checkId"] == str(checks[7].check_id)  # us's down in round 3
        assert events[1]["regions"] == {"ap": "up", "eu": "down", "us": "down"}
        assert events[2]["checkId"] == str(checks[9].check_id)  # eu back: 1 of 3 down
        regions = await rows(
            settings.database_url,
            "SELECT region, last_status FROM service_region_state WHERE service_id = 'svc-q'"
            " ORDER BY region",
        )
        assert [(r["region"], r["last_status"]) for r in regions] == [
            ("ap", "up"),
            ("eu", "up"),
            ("us", "up"),
        ]
    else:
        # Every check moves the status: eu's and us's failures flap it.
        assert moves == [
            (None, "up"),
            ("up", "down"),
            ("down", "up"),
            ("up", "down"),
            ("down", "up"),
        ]
        assert all(e["regions"] is None for e in events)
    state = await rows(
        settings.database_url, "SELECT last_status FROM service_state WHERE service_id = 'svc-q'"
    )
    assert state[0]["last_status"] == "up"


async def test_sla_breached_then_recovered(settings: Settings) -> None:
    await add_service(settings.database_url, "svc-sla", 99.0)
    now = datetime.now(UTC)

    def batch(n: int, ok: bool, minute: int) -> list[CheckCompleted]:
        return [
            make_check_completed(
                service_id="svc-sla",
                status="up" if ok else "down",
                started_at=now - timedelta(hours=2) + timedelta(minutes=minute, seconds=i),
                endpoints=[
                    make_endpoint_result(
                        ok=ok,
                        status_code=200 if ok else None,
                        error_type=None if ok else "connection",
                    )
                ],
            )
            for i in range(n)
        ]

    async with jetstream(settings) as js, running(settings) as agg:
        await publish(js, batch(10, True, 0))  # 100 %: met, nothing to say
        await wait_applied(agg, 10)
        await publish(js, batch(1, False, 1))  # 10/11 = 90.9 %: breached
        await wait_applied(agg, 11)
        await publish(js, batch(100, True, 2))  # 110/111 = 99.1 %: recovered
        await wait_applied(agg, 111)

        async def sla_events() -> list[Any]:
            return [json.loads(m.data) for m in await fetch_all(js, "watch.event.sla.svc-sla")]

        events = await eventually(sla_events, until=lambda e: len(e) >= 2, what="2 SLA events")
    assert [e["kind"] for e in events] == ["breached", "recovered"]
    assert events[0]["current"] == pytest.approx(100 * 10 / 11)
    assert events[1]["current"] == pytest.approx(100 * 110 / 111)
    assert all(e["target"] == 99.0 and e["window"]["days"] == 30 for e in events)
    state = await rows(
        settings.database_url, "SELECT sla_breached FROM service_state WHERE service_id = 'svc-sla'"
    )
    assert state == [{"sla_breached": False}]


async def test_malformed_messages_go_to_the_dead_letter_subject(settings: Settings) -> None:
    good = make_check_completed(service_id="svc-d")
    bad_json = b"this is not json"
    bad_check = json.dumps({"checkId": "not-a-uuid", "serviceId": "svc-d"}).encode()
    async with jetstream(settings) as js, running(settings) as agg:
        await js.publish("watch.check.svc-d", bad_json, headers={"Nats-Msg-Id": "bad-1"})
        await js.publish("watch.check.svc-d", bad_check, headers={"Nats-Msg-Id": "bad-2"})
        await publish(js, [good])
        await wait_applied(agg, 1)
        await wait_applied(agg, 2, "dlq_total")
        dead = await fetch_all(js, "watch.dlq.aggregator")
        await settled(js)
    assert sorted(m.data for m in dead) == sorted([bad_json, bad_check])
    for m in dead:
        assert m.headers[DLQ_SUBJECT_HEADER] == "watch.check.svc-d"
        assert m.headers[DLQ_CONSUMER_HEADER] == "aggregator"
        assert m.headers[DLQ_REASON_HEADER]
    daily = await rows(settings.database_url, "SELECT total_checks FROM api_call_logs")
    assert daily == [{"total_checks": 1}]


async def test_postgres_outage_loses_and_doubles_nothing(settings: Settings, infra: Any) -> None:
    await add_service(settings.database_url, "svc-a", 99.9)
    checks = truth_checks()
    async with jetstream(settings) as js, running(settings) as agg, httpx.AsyncClient() as http:
        readyz = f"http://127.0.0.1:{agg.ops.port}/readyz"
        await publish(js, checks[:60])
        await wait_applied(agg, 60)
        assert (await http.get(readyz)).status_code == 200
        await asyncio.to_thread(infra.pg.stop)
        try:
            await publish(js, checks[60:])

            async def ready_status() -> int:
                return (await http.get(readyz)).status_code

            await eventually(ready_status, until=lambda s: s == 503, what="not ready")
            assert metric(agg, "checks_applied_total") == 60
        finally:
            await asyncio.to_thread(infra.pg.start)
        await wait_applied(
            agg,
            len(checks),
        )
        await eventually(ready_status, until=lambda s: s == 200, what="ready again")
        await assert_rollups_equal_truth(settings.database_url)
        await settled(js)
