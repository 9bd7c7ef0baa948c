"""The recorder against real JetStream and PostgreSQL: rows, duplicates, dead letters."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy

from services.recorder.partitions import PartitionKeeper
from services.recorder.service import Recorder
from services.recorder.storage import PgRawStore
from shared.db import create_pool
from shared.events import (
    CHECKS_STREAM,
    DLQ_CONSUMER_HEADER,
    DLQ_REASON_HEADER,
    DLQ_STREAM,
    DLQ_SUBJECT_HEADER,
    CheckCompleted,
    check_subject,
)
from shared.settings import Settings
from shared.streams import ensure_streams
from tests.factories import make_check_completed, make_endpoint_result
from tests.polling import eventually


@pytest.fixture
async def js(settings: Settings) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    await ensure_streams(js, settings)
    try:
        yield js
    finally:
        await nc.close()


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def recorder(settings: Settings) -> AsyncIterator[Recorder]:
    rec = Recorder(settings=settings)
    await rec.start()
    try:
        yield rec
    finally:
        await rec.stop()


async def publish(js: JetStreamContext, check: CheckCompleted, msg_id: str | None = None) -> None:
    await js.publish(
        check_subject(check.service_id),
        check.to_wire(),
        headers={"Nats-Msg-Id": msg_id or str(check.check_id)},
    )


async def count(db: asyncpg.Connection, table: str) -> int:
    return int(await db.fetchval(f"SELECT count(*) FROM {table}"))


def sample(rec: Recorder, name: str, **labels: str) -> float:
    return rec.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_every_result_lands_once_with_its_values(
    recorder: Recorder, js: JetStreamContext, db: asyncpg.Connection
) -> None:
    slow = make_endpoint_result(name="search", response_time_ms=1500.0, latency_threshold_ms=1000.0)
    failed = make_endpoint_result(
        name="login",
        method="POST",
        status_code=None,
        response_time_ms=10000.0,
        ok=False,
        error_type="timeout",
        error_message="no answer within 10000 ms",
    )
    down = make_check_completed(
        service_id="svc-b",
        status="down",
        duration_ms=10020.0,
        trigger="manual",
        region="eu-1",
        prober_id="p-7",
        endpoints=[make_endpoint_result(), failed, slow],
    )
    ups = [make_check_completed() for _ in range(24)]
    for check in [*ups, down]:
        await publish(js, check)

    await eventually(lambda: count(db, "watch_server_logs"), until=lambda n: n >= 25, what="rows")
    assert await count(db, "watch_server_logs") == 25
    assert await count(db, "api_response_times") == 24 + 3

    row = await db.fetchrow("SELECT * FROM watch_server_logs WHERE check_id = $1", down.check_id)
    assert row is not None
    assert (row["service_id"], row["status"], row["trigger"]) == ("svc-b", "down", "manual")
    assert (row["region"], row["prober_id"]) == ("eu-1", "p-7")
    assert row["response_time_ms"] == pytest.approx(10020.0)
    assert (row["endpoint_count"], row["failed_count"]) == (3, 1)
    assert (row["error_type"], row["error_message"]) == ("timeout", "no answer within 10000 ms")
    assert row["started_at"] == down.started_at

    calls = await db.fetch(
        "SELECT * FROM api_response_times WHERE check_id = $1 ORDER BY endpoint_index",
        down.check_id,
    )
    assert [c["endpoint_name"] for c in calls] == ["health", "login", "search"]
    assert [c["ok"] for c in calls] == [True, False, True]
    assert [c["within_threshold"] for c in calls] == [True, False, False]
    assert [c["status_code"] for c in calls] == [200, None, 200]
    assert [c["error_type"] for c in calls] == [None, "timeout", None]
    assert calls[2]["response_time_ms"] == pytest.approx(1500.0)
    assert sample(recorder, "results_stored_total") == 25

    consumer = await js.consumer_info(CHECKS_STREAM, "recorder")
    assert consumer.config.ack_policy == AckPolicy.EXPLICIT
    assert consumer.config.ack_wait == 30
    assert consumer.config.max_deliver == 50
    assert consumer.config.backoff == [30, 60, 120, 300, 600]
    assert consumer.config.filter_subject == "watch.check.>"


async def test_replicas_share_the_durable_consumer(
    settings: Settings, js: JetStreamContext, db: asyncpg.Connection
) -> None:
    replicas = [Recorder(settings=settings) for _ in range(2)]
    for rec in replicas:
        await rec.start()
    try:
        checks = [make_check_completed() for _ in range(400)]
        for check in checks:
            await publish(js, check)
        await eventually(
            lambda: count(db, "watch_server_logs"), until=lambda n: n >= 400, what="all rows"
        )
        await eventually(
            lambda: asyncio.sleep(0, sum(sample(r, "results_stored_total") for r in replicas)),
            until=lambda n: n >= 400,
            what="metrics",
        )
    finally:
        for rec in replicas:
            await rec.stop()
    assert await count(db, "watch_server_logs") == 400
    assert sum(sample(r, "results_stored_total") for r in replicas) == 400
    assert sum(sample(r, "duplicates_total") for r in replicas) == 0


async def test_same_check_twice_is_one_row(
    recorder: Recorder, js: JetStreamContext, db: asyncpg.Connection
) -> None:
    check = make_check_completed()
    await publish(js, check, msg_id="first")
    await publish(js, check, msg_id="second")  # past JetStream's dedup: the recorder's job
    sentinel = make_check_completed()
    await publish(js, sentinel)

    async def stored() -> int:
        return int(
            await db.fetchval(
                "SELECT count(*) FROM watch_server_logs WHERE check_id = $1", sentinel.check_id
            )
        )

    await eventually(stored, until=lambda n: n == 1, what="sentinel stored")
    assert await count(db, "watch_server_logs") == 2
    assert await count(db, "api_response_times") == 2
    assert sample(recorder, "duplicates_total") == 1


async def test_each_probers_newest_stored_check_is_kept(
    recorder: Recorder, js: JetStreamContext, db: asyncpg.Connection
) -> None:
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    newest = {("eu", "p-eu"): base + timedelta(seconds=40), ("us", "p-us"): base}
    checks = [
        make_check_completed(region="eu", prober_id="p-eu", started_at=base + timedelta(seconds=s))
        for s in (0, 40, 20)  # out of order: the newest wins
    ] + [make_check_completed(region="us", prober_id="p-us", started_at=base)]
    for check in checks:
        await publish(js, check)
    await eventually(lambda: count(db, "watch_server_logs"), until=lambda n: n == 4, what="rows")
    # A late, older check from p-eu (another batch) does not move its time back.
    late = make_check_completed(region="eu", prober_id="p-eu", started_at=base - timedelta(hours=1))
    await publish(js, late)
    await eventually(lambda: count(db, "watch_server_logs"), until=lambda n: n == 5, what="late")
    rows = await db.fetch("SELECT region, prober_id, last_check_at FROM raw_sources")
    assert {(r["region"], r["prober_id"]): r["last_check_at"] for r in rows} == newest


async def test_a_newer_check_waits_for_a_batch_holding_its_probers_row_and_wins(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """Two batches of one prober at once: the one with the newer time is written last, whatever
    order they commit in (it once skipped the locked row and lost its newer time)."""
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        store = PgRawStore(pool=pool, partitions=PartitionKeeper(retention_days=30))
        await store.store(checks=[make_check_completed(prober_id="p-1", started_at=base)])
        other = await asyncpg.connect(settings.database_url)
        try:
            async with other.transaction():  # another batch, still open, with an older time
                await other.execute(
                    "UPDATE raw_sources SET last_check_at = $1 WHERE prober_id = 'p-1'",
                    base + timedelta(seconds=20),
                )
                newer = make_check_completed(
                    prober_id="p-1", started_at=base + timedelta(seconds=40)
                )
                storing = asyncio.create_task(store.store(checks=[newer]))
                await asyncio.sleep(0.5)
                assert not storing.done()  # it waits for the row instead of skipping it
            assert (await storing).stored == 1
        finally:
            await other.close()
    finally:
        await pool.close()
    last = await db.fetchval("SELECT last_check_at FROM raw_sources WHERE prober_id = 'p-1'")
    assert last == base + timedelta(seconds=40)


async def dlq_messages(js: JetStreamContext) -> list[tuple[bytes, dict[str, str]]]:
    try:
        info = await js.stream_info(DLQ_STREAM)
    except nats.js.errors.NotFoundError:
        return []
    if info.state.messages == 0:
        return []
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(DLQ_STREAM, seq)
        out.append((msg.data or b"", dict(msg.headers or {})))
    return out


async def test_malformed_messages_are_dead_lettered_and_the_rest_stored(
    settings: Settings, js: JetStreamContext, db: asyncpg.Connection
) -> None:
    good = [make_check_completed() for _ in range(4)]
    missing = json.loads(good[0].to_wire())
    del missing["status"]
    missing["checkId"] = str(uuid.uuid4())
    newer = json.loads(good[0].to_wire()) | {"schemaVersion": 99, "checkId": str(uuid.uuid4())}
    bad = [b"{not json", json.dumps(missing).encode(), json.dumps(newer).encode()]
    # All in the stream before the recorder starts, so they share one batch.
    await publish(js, good[0])
    for n, body in enumerate(bad):
        await js.publish("watch.check.svc-a", body, headers={"Nats-Msg-Id": f"bad-{n}"})
        await publish(js, good[n + 1])

    rec = Recorder(settings=settings)
    await rec.start()
    try:
        letters = await eventually(
            lambda: dlq_messages(js), until=lambda m: len(m) >= 3, what="dead letters"
        )
        await eventually(
            lambda: count(db, "watch_server_logs"), until=lambda n: n >= 4, what="good rows"
        )
    finally:
        await rec.stop()

    assert await count(db, "watch_server_logs") == 4
    assert [body for body, _ in letters] == bad
    reasons = [h[DLQ_REASON_HEADER] for _, h in letters]
    assert reasons[0].startswith("not JSON")
    assert "status" in reasons[1]
    assert "schemaVersion 99" in reasons[2]
    assert all(h[DLQ_SUBJECT_HEADER] == "watch.check.svc-a" for _, h in letters)
    assert all(h[DLQ_CONSUMER_HEADER] == "recorder" for _, h in letters)
    assert sample(rec, "dlq_total", reason="invalid_json") == 1


async def test_a_row_the_database_refuses_is_isolated(
    settings: Settings, js: JetStreamContext, db: asyncpg.Connection
) -> None:
    good = [make_check_completed() for _ in range(5)]
    # 70000 does not fit the smallint status_code column: a DataError for this row only.
    refused = make_check_completed(endpoints=[make_endpoint_result(status_code=70000)])
    for check in [*good[:2], refused, *good[2:]]:
        await publish(js, check)

    rec = Recorder(settings=settings)
    await rec.start()
    try:
        letters = await eventually(lambda: dlq_messages(js), what="dead letter")
        await eventually(
            lambda: count(db, "watch_server_logs"), until=lambda n: n >= 5, what="good rows"
        )
    finally:
        await rec.stop()
    assert await count(db, "watch_server_logs") == 5
    assert (
        await db.fetchval(
            "SELECT count(*) FROM watch_server_logs WHERE check_id = $1", refused.check_id
        )
        == 0
    )
    assert [body for body, _ in letters] == [refused.to_wire()]
    assert "out of int16 range" in letters[0][1][DLQ_REASON_HEADER]


async def test_partitions_maintained_and_old_or_future_results_not_stored(
    settings: Settings, js: JetStreamContext, db: asyncpg.Connection
) -> None:
    today = datetime.now(UTC).date()
    old_day = today - timedelta(days=settings.retention_days + 5)
    await db.fetchval("SELECT watch_ensure_partitions('watch_server_logs', $1, $1)", old_day)
    await db.fetchval("SELECT watch_ensure_partitions('api_response_times', $1, $1)", old_day)
    now = datetime.now(UTC)
    expired = make_check_completed(started_at=now - timedelta(days=settings.retention_days + 2))
    future = make_check_completed(started_at=now + timedelta(days=10))
    fresh = make_check_completed()
    for check in (expired, future, fresh):
        await publish(js, check)

    rec = Recorder(settings=settings)
    await rec.start()
    try:
        await eventually(lambda: dlq_messages(js), what="future result dead-lettered")
        await eventually(lambda: count(db, "watch_server_logs"), what="fresh row")
        assert sample(rec, "expired_total") == 1
        async with httpx.AsyncClient() as client:
            ready = await client.get(f"http://127.0.0.1:{rec.ops.port}/readyz")  # type: ignore[union-attr]
            metrics = await client.get(f"http://127.0.0.1:{rec.ops.port}/metrics")  # type: ignore[union-attr]
    finally:
        await rec.stop()

    assert ready.status_code == 200
    assert 'dlq_total{reason="future"} 1.0' in metrics.text
    parts = {
        r["relname"]
        for r in await db.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'check_results'"
        )
    }
    day = lambda d: f"check_results_p{d:%Y%m%d}"  # noqa: E731
    assert day(old_day) not in parts
    assert day(today - timedelta(days=settings.retention_days)) in parts
    assert day(today + timedelta(days=7)) in parts
    assert len(parts) == settings.retention_days + 8
    assert await count(db, "watch_server_logs") == 1
