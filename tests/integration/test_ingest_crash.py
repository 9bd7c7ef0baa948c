"""Recorder and aggregator as processes, SIGKILLed at random points while a known stream of
results flows: afterwards every result is stored once and every rollup row equals a
recompute from the raw tables. Also: duplicates under other message ids, poison messages,
and a replay of the whole stream, which changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from shared import histogram
from shared.events import CheckCompleted, check_subject
from shared.settings import Settings
from tests.factories import make_check_completed, make_endpoint_result
from tests.jetstream import jetstream
from tests.polling import eventually

REPO = Path(__file__).resolve().parents[2]
KILLS = 10  # per service
SERVICE_TARGETS = {"svc-one": 99.0, "svc-two": 99.9}  # svc-three is not in `services`
MAJOR_OUTAGE_BELOW = 95.0
DEFAULT_TARGET = 99.9


class ServiceProc:
    """`python -m services.<name>` in its own process group, killed by PID."""

    def __init__(self, name: str, settings: Settings, log: Path) -> None:
        self.name = name
        self.log = log
        self.env = os.environ | {
            "DATABASE_URL": settings.database_url,
            "NATS_URL": settings.nats_url,
            "OPS_PORT": "0",
            "RECORDER_BATCH_SIZE": "200",
            "AGGREGATOR_BATCH_SIZE": "200",
            "LOG_LEVEL": "info",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.name}"],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def signal(self, sig: int, timeout: float = 30) -> int:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)
        return self.proc.wait(timeout)

    def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGKILL)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


# --- the results the test publishes (the ground truth) ----------------------------------------


def skewed_ms(rnd: random.Random) -> float:
    """Mostly fast with a long slow tail, as real latency is."""
    if rnd.random() < 0.08:
        return rnd.uniform(400, 5000)
    return rnd.lognormvariate(3.5, 0.7)


def make_results(n: int, seed: int = 4) -> list[CheckCompleted]:
    """n results over three services (one with two endpoints) in the last 36 hours."""
    rnd = random.Random(seed)
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        service = ("svc-one", "svc-two", "svc-three")[i % 3]
        calls = []
        for e in range(2 if service == "svc-two" else 1):
            roll = rnd.random()
            if roll < 0.03:
                call = make_endpoint_result(
                    name=f"e{e}",
                    status_code=None,
                    ok=False,
                    error_type="timeout",
                    response_time_ms=10_000.0,
                    error_message="timed out",
                )
            elif roll < 0.06:
                call = make_endpoint_result(
                    name=f"e{e}",
                    status_code=503,
                    ok=False,
                    error_type="http_status",
                    response_time_ms=skewed_ms(rnd),
                )
            elif roll < 0.07:
                call = make_endpoint_result(
                    name=f"e{e}", status_code=None, ok=False, error_type=None, response_time_ms=1.0
                )
            else:
                call = make_endpoint_result(
                    name=f"e{e}", response_time_ms=skewed_ms(rnd), latency_threshold_ms=200.0
                )
            calls.append(call)
        status = (
            "down"
            if any(not c.ok for c in calls)
            else "degraded"
            if any(not c.within_threshold for c in calls)
            else "up"
        )
        started = now - timedelta(seconds=rnd.uniform(0, 36 * 3600))
        out.append(
            make_check_completed(
                service_id=service,
                started_at=started,
                scheduled_at=started,
                status=status,
                duration_ms=sum(c.response_time_ms for c in calls),
                endpoints=calls,
            )
        )
    return out


POISON = [
    b"not json at all",
    json.dumps({"checkId": "not-a-uuid", "serviceId": "svc-one"}).encode(),
    json.dumps({"schemaVersion": 1, "serviceId": "svc-one"}).encode(),
]


# --- NATS and PostgreSQL helpers --------------------------------------------------------------


async def add_consumers(js: JetStreamContext) -> None:
    """Both durable consumers as the services declare them, with a short ack_wait, so the
    batches of a killed process come back in seconds (an existing consumer is bound as is)."""
    for name in ("recorder", "aggregator"):
        await js.add_consumer(
            "WATCH_CHECKS",
            ConsumerConfig(
                durable_name=name,
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=2.0,
                max_deliver=50,
                filter_subject="watch.check.>",
                max_ack_pending=8000,
            ),
        )


async def settled(js: JetStreamContext, timeout: float = 60) -> None:
    """Until both consumers have acked everything in the stream."""

    async def pending() -> list[tuple[int, int]]:
        out = []
        for name in ("recorder", "aggregator"):
            info = await js.consumer_info("WATCH_CHECKS", name)
            out.append((info.num_ack_pending, info.num_pending))
        return out

    await eventually(
        pending, until=lambda p: p == [(0, 0), (0, 0)], timeout=timeout, what="both settled"
    )


async def publish_one(js: JetStreamContext, check: CheckCompleted, msg_id: str) -> bool:
    ack = await js.publish(
        check_subject(check.service_id), check.to_wire(), headers={"Nats-Msg-Id": msg_id}
    )
    return not ack.duplicate


async def connect(db_url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(db_url, server_settings={"timezone": "UTC"})
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    return conn


async def scalar(db_url: str, sql: str) -> int:
    try:
        conn = await connect(db_url)
    except (OSError, asyncpg.PostgresError):
        return -1  # PostgreSQL is being restarted by the test
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def add_services(db_url: str) -> None:
    conn = await connect(db_url)
    try:
        for service, target in SERVICE_TARGETS.items():
            await conn.execute(
                "INSERT INTO services (id, name, interval_seconds, timeout_ms, sla_target, "
                "defined_at) VALUES ($1, $1, 30, 10000, $2, now())",
                service,
                target,
            )
    finally:
        await conn.close()


# --- the recompute from raw data, written independently of the aggregator ------------------

_GAMMA = "((1 + 0.01::float8) / (1 - 0.01::float8))"


def recompute_sql(key: str) -> str:
    """The rollup rows recomputed from the raw tables; `key` is the day or hour expression."""
    timed = "status_code IS NOT NULL"
    return f"""
    WITH checks AS (
        SELECT service_id, {key} AS k, count(*) AS total_checks,
               count(*) FILTER (WHERE status = 'up') AS up_checks,
               count(*) FILTER (WHERE status = 'degraded') AS degraded_checks,
               count(*) FILTER (WHERE status = 'down') AS down_checks
        FROM watch_server_logs GROUP BY 1, 2),
    calls AS (
        SELECT service_id, {key} AS k, count(*) AS total_requests,
               count(*) FILTER (WHERE ok) AS successful_requests,
               count(*) FILTER (WHERE NOT ok) AS failed_requests,
               count(*) FILTER (WHERE within_threshold) AS within_threshold,
               count(*) FILTER (WHERE {timed}) AS timed_requests,
               coalesce(sum(response_time_ms::float8) FILTER (WHERE {timed}), 0)
                   AS sum_response_time_ms,
               min(response_time_ms::float8) FILTER (WHERE {timed}) AS min_response_time_ms,
               max(response_time_ms::float8) FILTER (WHERE {timed}) AS max_response_time_ms
        FROM api_response_times GROUP BY 1, 2),
    errors AS (
        SELECT service_id, k, jsonb_object_agg(kind, n) AS errors FROM (
            SELECT service_id, {key} AS k, coalesce(error_type, 'other') AS kind, count(*) AS n
            FROM api_response_times WHERE NOT ok GROUP BY 1, 2, 3) e
        GROUP BY 1, 2),
    hist AS (
        SELECT service_id, k, jsonb_object_agg(b::text, n) AS latency_hist FROM (
            SELECT service_id, {key} AS k,
                   ceil(ln(greatest(response_time_ms::float8, 0.001)) / ln({_GAMMA}))::int AS b,
                   count(*) AS n
            FROM api_response_times WHERE {timed} GROUP BY 1, 2, 3) h
        GROUP BY 1, 2)
    SELECT checks.*, calls.total_requests, calls.successful_requests, calls.failed_requests,
           calls.within_threshold, calls.timed_requests, calls.sum_response_time_ms,
           calls.min_response_time_ms, calls.max_response_time_ms,
           coalesce(errors.errors, '{{}}') AS errors,
           coalesce(hist.latency_hist, '{{}}') AS latency_hist
    FROM checks JOIN calls USING (service_id, k)
    LEFT JOIN errors USING (service_id, k) LEFT JOIN hist USING (service_id, k)"""


DAY_KEY = "(started_at AT TIME ZONE 'UTC')::date"
HOUR_KEY = "date_trunc('hour', started_at)"  # the session speaks UTC

UPTIME_SQL = f"""
    SELECT r.service_id, r.k AS day, r.total_requests, r.successful_requests,
           coalesce(s.sla_target, {DEFAULT_TARGET}) AS sla_target,
           100.0 * r.successful_requests / r.total_requests AS uptime,
           CASE WHEN 100.0 * r.successful_requests / r.total_requests
                     >= coalesce(s.sla_target, {DEFAULT_TARGET}) THEN 'o'
                WHEN 100.0 * r.successful_requests / r.total_requests
                     >= {MAJOR_OUTAGE_BELOW} THEN 'po'
                ELSE 'mo' END AS status
    FROM ({recompute_sql(DAY_KEY)}) r LEFT JOIN services s ON s.id = r.service_id"""

COUNTERS = (
    "total_checks",
    "up_checks",
    "degraded_checks",
    "down_checks",
    "total_requests",
    "successful_requests",
    "failed_requests",
    "within_threshold",
    "timed_requests",
)


def _ints(d: dict[str, Any]) -> dict[str, int]:
    return {str(k): int(v) for k, v in d.items()}


async def assert_rollups_equal_raw(db_url: str) -> None:
    """Every daily, hourly and uptime row equals the recompute from raw, and nothing else."""
    conn = await connect(db_url)
    try:
        for table, key, keycol in (
            ("api_call_logs", DAY_KEY, "day"),
            ("api_call_logs_hourly", HOUR_KEY, "hour"),
        ):
            want = {(r["service_id"], r["k"]): r for r in await conn.fetch(recompute_sql(key))}
            have = {(r["service_id"], r[keycol]): r for r in await conn.fetch(f"TABLE {table}")}
            assert set(have) == set(want), table
            for k, w in want.items():
                h = have[k]
                for col in COUNTERS:
                    assert h[col] == w[col], (table, k, col)
                assert h["sum_response_time_ms"] == pytest.approx(w["sum_response_time_ms"])
                assert h["min_response_time_ms"] == w["min_response_time_ms"], (table, k)
                assert h["max_response_time_ms"] == w["max_response_time_ms"], (table, k)
                assert _ints(h["errors"]) == _ints(w["errors"]), (table, k)
                assert _ints(h["latency_hist"]) == _ints(w["latency_hist"]), (table, k)
        want_up = {(r["service_id"], r["day"]): r for r in await conn.fetch(UPTIME_SQL)}
        have_up = {(r["service_id"], r["day"]): r for r in await conn.fetch("TABLE uptime_records")}
        assert set(have_up) == set(want_up)
        for k, w in want_up.items():
            h = have_up[k]
            assert (h["status"], h["total_requests"], h["successful_requests"]) == (
                w["status"],
                w["total_requests"],
                w["successful_requests"],
            ), k
            assert h["uptime"] == pytest.approx(float(w["uptime"])), k
            assert h["sla_target"] == pytest.approx(float(w["sla_target"])), k
    finally:
        await conn.close()


async def rollup_snapshot(db_url: str) -> list[list[Any]]:
    """The rollup tables without their updated_at, for a before/after comparison."""
    conn = await connect(db_url)
    try:
        out = []
        for table, order in (
            ("api_call_logs", "service_id, day"),
            ("api_call_logs_hourly", "service_id, hour"),
            ("uptime_records", "service_id, day"),
        ):
            rows = await conn.fetch(f"SELECT * FROM {table} ORDER BY {order}")
            out.append([{k: v for k, v in r.items() if k != "updated_at"} for r in rows])
        return out
    finally:
        await conn.close()


async def assert_percentiles_close_to_raw(db_url: str) -> None:
    """Percentiles from the merged rollup histograms within 2 % of the exact raw ones."""
    qs = [0.5, 0.75, 0.9, 0.95, 0.99]
    conn = await connect(db_url)
    try:
        for service in ("svc-one", "svc-two"):
            exact = await conn.fetchrow(
                "SELECT percentile_cont($2::float8[]) WITHIN GROUP (ORDER BY response_time_ms) "
                "AS q FROM api_response_times WHERE service_id = $1 AND status_code IS NOT NULL",
                service,
                qs,
            )
            rows = await conn.fetch(
                "SELECT latency_hist, min_response_time_ms AS lo, max_response_time_ms AS hi "
                "FROM api_call_logs WHERE service_id = $1",
                service,
            )
            merged = histogram.merge(r["latency_hist"] for r in rows)
            lo = min(r["lo"] for r in rows if r["lo"] is not None)
            hi = max(r["hi"] for r in rows if r["hi"] is not None)
            estimates = histogram.quantiles(merged, qs, lo, hi)
            for q, estimate, value in zip(qs, estimates, exact["q"], strict=True):
                assert estimate is not None
                assert abs(estimate - value) / value < 0.02, (service, q, estimate, value)
    finally:
        await conn.close()


async def dlq_reasons(js: JetStreamContext, consumer: str) -> list[str]:
    """The reason header of every dead letter of one consumer."""
    sub = await js.pull_subscribe(f"watch.dlq.{consumer}", stream="WATCH_DLQ")
    out: list[str] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(100, timeout=0.5)
            except TimeoutError:
                return out
            for m in msgs:
                await m.ack()
                out.append((m.headers or {}).get("Watch-Dlq-Reason", ""))
    finally:
        await sub.unsubscribe()


# --- the tests --------------------------------------------------------------------------------


async def _kill_loop(
    proc: ServiceProc, progress: Any, rnd: random.Random, kills: list[int]
) -> None:
    """Start, let it work a random moment, SIGKILL; KILLS times, then leave it running."""
    for _ in range(KILLS):
        proc.start()
        before = await progress()
        # The stream may be drained already: the kill still lands at some point.
        with contextlib.suppress(AssertionError):
            await eventually(
                progress,
                until=lambda n, b=before: n > b,
                timeout=rnd.uniform(2.0, 4.0),
                interval=0.02,
                what=f"{proc.name} progress",
            )
        await asyncio.sleep(rnd.uniform(0, 0.4))
        rc = await asyncio.to_thread(proc.signal, signal.SIGKILL)
        assert rc == -signal.SIGKILL, f"{proc.name} exited by itself ({rc}):\n{proc.tail()}"
        kills.append(1)
    proc.start()


@pytest.mark.timeout(300)
async def test_sigkill_both_services_at_random_points_loses_and_doubles_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    db_url = settings.database_url
    await add_services(db_url)
    results = make_results(6000)
    rnd = random.Random(44)
    recorder = ServiceProc("recorder", settings, tmp_path / "recorder.log")
    aggregator = ServiceProc("aggregator", settings, tmp_path / "aggregator.log")
    try:
        async with jetstream(settings) as js:
            await add_consumers(js)

            async def publish_all() -> None:
                for i, check in enumerate(results):
                    assert await publish_one(js, check, str(check.check_id))
                    if i % 40 == 0:  # the same result under another message id: stored twice
                        assert await publish_one(js, check, f"dup-{uuid.uuid4()}")
                    if i % 97 == 0:  # the same message id again: JetStream drops it
                        assert not await publish_one(js, check, str(check.check_id))
                    if i % 2000 == 1000:
                        poison = POISON[(i // 2000) % len(POISON)]
                        await js.publish("watch.check.svc-one", poison)
                    await asyncio.sleep(0.03 if i % 10 == 0 else 0)  # ~20 s of steady flow

            async def raw_rows() -> int:
                return await scalar(db_url, "SELECT count(*) FROM watch_server_logs")

            async def applied_rows() -> int:
                return await scalar(db_url, "SELECT count(*) FROM aggregator_applied")

            kills: list[int] = []
            await asyncio.gather(
                publish_all(),
                _kill_loop(recorder, raw_rows, random.Random(rnd.random()), kills),
                _kill_loop(aggregator, applied_rows, random.Random(rnd.random()), kills),
            )
            assert len(kills) == 2 * KILLS
            await eventually(raw_rows, until=lambda n: n >= len(results), timeout=60)
            await eventually(applied_rows, until=lambda n: n >= len(results), timeout=60)
            await settled(js)

            n = len(results)
            assert await raw_rows() == n
            assert (
                await scalar(db_url, "SELECT count(DISTINCT check_id) FROM watch_server_logs") == n
            )
            calls = sum(len(c.endpoints) for c in results)
            assert await scalar(db_url, "SELECT count(*) FROM api_response_times") == calls
            assert await applied_rows() == n
            assert await scalar(db_url, "SELECT sum(total_checks) FROM api_call_logs") == n
            await assert_rollups_equal_raw(db_url)
            await assert_percentiles_close_to_raw(db_url)
            poisoned = len([i for i in range(len(results)) if i % 2000 == 1000])
            assert len(await dlq_reasons(js, "recorder")) == poisoned, await dlq_reasons(
                js, "recorder"
            )
            assert len(await dlq_reasons(js, "aggregator")) == poisoned

            # A replay of the whole stream through new consumers changes nothing.
            before = await rollup_snapshot(db_url)
            assert recorder.signal(signal.SIGTERM) == 0
            assert aggregator.signal(signal.SIGTERM) == 0
            for name in ("recorder", "aggregator"):
                await js.delete_consumer("WATCH_CHECKS", name)
            await add_consumers(js)
            recorder.start()
            aggregator.start()
            await settled(js)
            assert await raw_rows() == n
            assert await applied_rows() == n
            assert await rollup_snapshot(db_url) == before
            assert len(await dlq_reasons(js, "recorder")) == poisoned
            assert len(await dlq_reasons(js, "aggregator")) == poisoned
            assert recorder.signal(signal.SIGTERM) == 0
            assert aggregator.signal(signal.SIGTERM) == 0
    except BaseException:
        print("--- recorder\n" + recorder.tail() + "\n--- aggregator\n" + aggregator.tail())
        raise
    finally:
        recorder.ensure_stopped()
        aggregator.ensure_stopped()


def test_the_recompute_hist_bucket_matches_the_histogram_module() -> None:
    # The SQL above mirrors shared.histogram; a change there must show up here.
    assert math.isclose(histogram.GAMMA, (1 + 0.01) / (1 - 0.01))
    assert histogram.MIN_VALUE_MS == 0.001
