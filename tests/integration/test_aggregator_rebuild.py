"""The rebuild command: rollups recomputed from raw data, safe beside a running aggregator,
never double counting, and days past retention left as they are."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.aggregator.rebuild import rebuild
from services.aggregator.service import Aggregator
from services.aggregator.store import RollupStore
from services.recorder.partitions import PartitionKeeper
from services.recorder.storage import PgRawStore
from shared.db import create_pool
from shared.events import CheckCompleted
from shared.settings import Settings
from tests.integration.test_ingest_crash import (
    add_services,
    assert_rollups_equal_raw,
    connect,
    jetstream,
    make_results,
    publish_one,
    scalar,
)
from tests.polling import eventually

REPO = Path(__file__).resolve().parents[2]
TODAY = datetime.now(UTC).date()


async def store_raw(settings: Settings, checks: list[CheckCompleted]) -> None:
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        store = PgRawStore(pool=pool, partitions=PartitionKeeper(retention_days=30))
        for i in range(0, len(checks), 500):
            await store.store(checks=checks[i : i + 500])
    finally:
        await pool.close()


async def apply_rollups(settings: Settings, checks: list[CheckCompleted]) -> int:
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        store = RollupStore(pool=pool, settings=settings)
        applied = 0
        for i in range(0, len(checks), 500):
            batch = checks[i : i + 500]
            await store.ensure_days({c.started_at.astimezone(UTC).date() for c in batch})
            applied += len((await store.apply(batch, now=datetime.now(UTC))).applied)
        return applied
    finally:
        await pool.close()


async def test_rebuild_repairs_damaged_rollups_and_never_double_counts(settings: Settings) -> None:
    db_url = settings.database_url
    await add_services(db_url)
    checks = make_results(1500, seed=11)
    await store_raw(settings, checks)
    assert await apply_rollups(settings, checks) == len(checks)
    await assert_rollups_equal_raw(db_url)

    # Damage: a wrong counter, a lost hourly row, a changed target, a row past retention.
    old_day = TODAY - timedelta(days=400)
    conn = await connect(db_url)
    try:
        await conn.execute("UPDATE api_call_logs SET total_checks = 1, errors = '{}'")
        await conn.execute(
            "DELETE FROM api_call_logs_hourly WHERE ctid IN "
            "(SELECT ctid FROM api_call_logs_hourly LIMIT 3)"
        )
        await conn.execute("UPDATE services SET sla_target = 50 WHERE id = 'svc-one'")
        await conn.execute(
            "INSERT INTO api_call_logs (service_id, day, total_checks) VALUES ('svc-one', $1, 7)",
            old_day,
        )
    finally:
        await conn.close()

    steps: list[int] = []
    done, counted = await rebuild(
        dsn=db_url,
        settings=settings,
        services=None,
        first=old_day,
        last=TODAY,
        progress=steps.append,
    )
    assert counted == len(checks)
    raw_days = await scalar(
        db_url, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'check_results'::regclass"
    )
    assert done == len(steps) == 3 * raw_days  # three services, every day with raw data
    # The old day has no raw data: left as it was, and the recompute ignores it.
    conn = await connect(db_url)
    try:
        assert (
            await conn.fetchval("SELECT total_checks FROM api_call_logs WHERE day = $1", old_day)
            == 7
        )
        await conn.execute("DELETE FROM api_call_logs WHERE day = $1", old_day)
        statuses = {
            r["status"]
            for r in await conn.fetch(
                "SELECT status FROM uptime_records WHERE service_id = 'svc-one'"
            )
        }
    finally:
        await conn.close()
    assert statuses == {"o"}  # the new target applies to rebuilt days
    await assert_rollups_equal_raw(db_url)

    # Every rebuilt check is marked counted: delivering them again changes nothing.
    assert await apply_rollups(settings, checks) == 0
    await assert_rollups_equal_raw(db_url)


@pytest.mark.timeout(120)
async def test_rebuild_while_the_aggregator_runs_counts_each_check_once(
    settings: Settings,
) -> None:
    db_url = settings.database_url
    await add_services(db_url)
    checks = make_results(3000, seed=12)
    agg = Aggregator(settings=settings)
    await agg.start()
    try:
        async with jetstream(settings) as js:
            published = asyncio.Event()

            async def publish() -> None:
                # Raw first, as the docs ask (the recorder has caught up), then the stream;
                # a few seconds of flow, so rebuilds overlap the aggregator's batches.
                for i in range(0, len(checks), 50):
                    await store_raw(settings, checks[i : i + 50])
                    for c in checks[i : i + 50]:
                        await publish_one(js, c, str(c.check_id))
                    await asyncio.sleep(0.03)
                published.set()

            async def rebuild_repeatedly() -> int:
                rounds = 0
                while not published.is_set():
                    await rebuild(
                        dsn=db_url,
                        settings=settings,
                        services=None,
                        first=TODAY - timedelta(days=2),
                        last=TODAY,
                    )
                    rounds += 1
                return rounds

            _, rounds = await asyncio.gather(publish(), rebuild_repeatedly())
            assert rounds >= 5

            async def pending() -> tuple[int, int]:
                info = await js.consumer_info("WATCH_CHECKS", "aggregator")
                return info.num_ack_pending, info.num_pending

            await eventually(pending, until=lambda p: p == (0, 0), what="aggregator settled")
    finally:
        await agg.stop()
    assert await scalar(db_url, "SELECT sum(total_checks) FROM api_call_logs") == len(checks)
    await assert_rollups_equal_raw(db_url)


async def test_the_command_line_shows_progress_and_a_summary(settings: Settings) -> None:
    env = {
        "DATABASE_URL": settings.database_url,
        "NATS_URL": settings.nats_url,
        "PATH": "/usr/bin:/bin",
    }
    day = TODAY.isoformat()
    r = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.aggregator.rebuild", "--from", day, "--to", day],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "INFO rebuild service_days=0 checks=0" in r.stdout
    bad = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.aggregator.rebuild", "--from", "yesterday"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "not a date" in bad.stderr
