"""Retention: raw partitions past RETENTION_DAYS are dropped whole (DROP TABLE, no row
deleted one by one), the rollups of those days are kept, and a busy parent table makes the
drop wait for the next run instead of blocking writers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import pytest

from services.aggregator.store import RollupStore
from services.recorder.partitions import PartitionKeeper
from services.recorder.storage import PgRawStore
from shared.db import create_pool
from shared.settings import Settings
from tests.factories import make_check_completed
from tests.integration.test_ingest_crash import connect

NOW = datetime.now(UTC)
TODAY = NOW.date()


async def _seed(settings: Settings, old_days: int) -> None:
    """Raw rows and rollups for a day `old_days` ago and for today."""
    checks = [
        make_check_completed(started_at=NOW - timedelta(days=d, minutes=i))
        for d in (old_days, 0)
        for i in range(50)
    ]
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        raw = PgRawStore(pool=pool, partitions=PartitionKeeper(retention_days=old_days + 5))
        await raw.store(checks=checks)
        rollups = RollupStore(pool=pool, settings=settings)
        await rollups.ensure_days({c.started_at.date() for c in checks})
        assert len((await rollups.apply(checks, now=NOW)).applied) == len(checks)
    finally:
        await pool.close()


async def _snapshot(conn: asyncpg.Connection) -> list[Any]:
    return [
        [dict(r) for r in await conn.fetch(f"SELECT * FROM {t} ORDER BY 1, 2")]
        for t in ("api_call_logs", "api_call_logs_hourly", "uptime_records")
    ]


async def test_old_partitions_are_dropped_whole_and_rollups_kept(settings: Settings) -> None:
    await _seed(settings, old_days=10)
    old_day = (NOW - timedelta(days=10)).date()
    conn = await connect(settings.database_url)
    try:
        rollups_before = await _snapshot(conn)
        assert await conn.fetchval("SELECT count(*) FROM watch_server_logs") == 100
        keeper = PartitionKeeper(retention_days=7)
        done = await keeper.maintain(conn=cast(asyncpg.Connection, conn))
        assert done is not None and done.dropped >= 2  # both raw tables' old partitions

        # The partitions themselves are gone (DROP TABLE), not emptied row by row.
        for table in ("check_results", "endpoint_results"):
            assert (
                await conn.fetchval("SELECT to_regclass($1)", f"{table}_p{old_day:%Y%m%d}") is None
            )
        assert await conn.fetchval("SELECT count(*) FROM watch_server_logs") == 50
        # The rollups of the dropped day are kept, unchanged.
        assert await _snapshot(conn) == rollups_before
        assert (
            await conn.fetchval("SELECT total_checks FROM api_call_logs WHERE day = $1", old_day)
            == 50
        )
    finally:
        await conn.close()


@pytest.mark.timeout(60)
async def test_a_long_reader_postpones_the_drop_instead_of_blocking_writers(
    settings: Settings,
) -> None:
    await _seed(settings, old_days=10)
    reader = await connect(settings.database_url)
    conn = await connect(settings.database_url)
    try:
        tx = reader.transaction()
        await tx.start()
        await reader.fetchval("SELECT count(*) FROM watch_server_logs")  # holds a share lock
        keeper = PartitionKeeper(retention_days=7, lock_timeout_ms=200)
        with pytest.raises(asyncpg.LockNotAvailableError):
            await asyncio.wait_for(keeper.maintain(conn=cast(asyncpg.Connection, conn)), 10)
        await tx.rollback()
        done = await keeper.maintain(conn=cast(asyncpg.Connection, conn))
        assert done is not None and done.dropped >= 2
    finally:
        await reader.close()
        await conn.close()
