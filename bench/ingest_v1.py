"""The version-1 raw write path (schema 001, `INSERT ... SELECT FROM unnest(...)`), kept for
bench_ingest.py to measure the compact COPY path against, on the same rows."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from shared.db import ensure_partitions, load_migrations
from shared.events import CheckCompleted

INSERT_LOGS = """
INSERT INTO watch_server_logs (
    check_id, started_at, service_id, scheduled_at, status, response_time_ms,
    endpoint_count, failed_count, error_type, error_message, region, prober_id, trigger)
SELECT * FROM unnest(
    $1::uuid[], $2::timestamptz[], $3::text[], $4::timestamptz[], $5::text[], $6::real[],
    $7::smallint[], $8::smallint[], $9::text[], $10::text[], $11::text[], $12::text[],
    $13::text[])
ON CONFLICT DO NOTHING
"""

INSERT_TIMES = """
INSERT INTO api_response_times (
    check_id, endpoint_index, started_at, service_id, endpoint_name, method, status_code,
    response_time_ms, ok, within_threshold, error_type)
SELECT * FROM unnest(
    $1::uuid[], $2::smallint[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
    $7::smallint[], $8::real[], $9::boolean[], $10::boolean[], $11::text[])
ON CONFLICT DO NOTHING
"""

INSERT_ONE_LOG = """
INSERT INTO watch_server_logs (
    check_id, started_at, service_id, scheduled_at, status, response_time_ms,
    endpoint_count, failed_count, error_type, error_message, region, prober_id, trigger)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT DO NOTHING
"""

INSERT_ONE_TIME = """
INSERT INTO api_response_times (
    check_id, endpoint_index, started_at, service_id, endpoint_name, method, status_code,
    response_time_ms, ok, within_threshold, error_type)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT DO NOTHING
"""


async def create_schema(conn: asyncpg.Connection, days: Sequence[object]) -> None:
    """Schema version 1 only, with partitions for the given days."""
    await conn.execute(load_migrations()[0].sql)
    for table in ("watch_server_logs", "api_response_times"):
        for day in days:
            await ensure_partitions(conn, table, day, day)  # type: ignore[arg-type]


def log_row(c: CheckCompleted) -> tuple[object, ...]:
    failed = [e for e in c.endpoints if not e.ok]
    first = failed[0] if failed else None
    return (
        c.check_id,
        c.started_at,
        c.service_id,
        c.scheduled_at,
        c.status,
        c.duration_ms,
        len(c.endpoints),
        len(failed),
        first.error_type if first else None,
        first.error_message if first else None,
        c.region,
        c.prober_id,
        c.trigger,
    )


def time_rows(c: CheckCompleted) -> list[tuple[object, ...]]:
    return [
        (
            c.check_id,
            i,
            c.started_at,
            c.service_id,
            e.name,
            e.method,
            e.status_code,
            e.response_time_ms,
            e.ok,
            e.within_threshold,
            e.error_type,
        )
        for i, e in enumerate(c.endpoints)
    ]


async def store_unnest(conn: asyncpg.Connection, checks: Sequence[CheckCompleted]) -> None:
    """One batch the version-1 way: two unnest inserts in one transaction."""
    logs = [log_row(c) for c in checks]
    times = [t for c in checks for t in time_rows(c)]
    async with conn.transaction():
        await conn.execute(INSERT_LOGS, *[list(col) for col in zip(*logs, strict=True)])
        await conn.execute(INSERT_TIMES, *[list(col) for col in zip(*times, strict=True)])


async def store_one(conn: asyncpg.Connection, check: CheckCompleted) -> None:
    """One result the seed's way: its own INSERTs and commit."""
    async with conn.transaction():
        await conn.execute(INSERT_ONE_LOG, *log_row(check))
        for row in time_rows(check):
            await conn.execute(INSERT_ONE_TIME, *row)
