"""`python -m services.aggregator.rebuild`: recompute rollups from the raw tables.

    python -m services.aggregator.rebuild --service face-compare --from 2026-11-01 --to 2026-11-26
    python -m services.aggregator.rebuild              # every service, the whole retention window

For each service and UTC day, in one repeatable-read transaction: the day's checks are
marked as counted in `aggregator_applied` (so a later delivery of one of them is skipped),
the service's row in `service_state` is locked (the running aggregator takes the same lock
before it touches the service's rollups; a concurrent change makes the rebuild of that day
roll back and start again), then the daily row, its hourly rows and the day's uptime record
are replaced by a recompute from `watch_server_logs` / `api_response_times`, with the
day-status rule and the service's current SLA target.

Days whose raw partition is gone (older than RETENTION_DAYS) have no raw data: their
rollups are left as they are. Rebuild a day once the recorder has caught up: a check the
aggregator counted but the recorder has not stored yet is not in the recomputed row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import asyncpg
from tqdm import tqdm

from services.aggregator.store import APPLIED_TABLE
from shared import db, histogram, rules
from shared.rollup_row import COUNT_COLUMNS, ROLLUP_COLUMNS
from shared.settings import Settings, load_settings

CHECK_COUNTS = """
SELECT count(*) AS total_checks,
       count(*) FILTER (WHERE status = 'up') AS up_checks,
       count(*) FILTER (WHERE status = 'degraded') AS degraded_checks,
       count(*) FILTER (WHERE status = 'down') AS down_checks
FROM watch_server_logs
WHERE service_id = $1 AND started_at >= $2 AND started_at < $3
"""

# Per hour of the day; the daily row is their sum. Latency buckets as shared.histogram.
CALL_COUNTS = """
WITH calls AS (
    SELECT date_trunc('hour', started_at) AS hour, ok, within_threshold, error_type,
           status_code IS NOT NULL AS timed, response_time_ms::float8 AS ms
    FROM api_response_times
    WHERE service_id = $1 AND started_at >= $2 AND started_at < $3),
checks AS (
    SELECT date_trunc('hour', started_at) AS hour, count(*) AS total_checks,
           count(*) FILTER (WHERE status = 'up') AS up_checks,
           count(*) FILTER (WHERE status = 'degraded') AS degraded_checks,
           count(*) FILTER (WHERE status = 'down') AS down_checks
    FROM watch_server_logs
    WHERE service_id = $1 AND started_at >= $2 AND started_at < $3
    GROUP BY 1)
SELECT checks.*, c.total_requests, c.successful_requests, c.failed_requests,
       c.within_threshold, c.timed_requests, c.sum_response_time_ms,
       c.min_response_time_ms, c.max_response_time_ms,
       coalesce(e.errors, '{}'::jsonb) AS errors,
       coalesce(h.latency_hist, '{}'::jsonb) AS latency_hist
FROM checks
JOIN (SELECT hour, count(*) AS total_requests,
             count(*) FILTER (WHERE ok) AS successful_requests,
             count(*) FILTER (WHERE NOT ok) AS failed_requests,
             count(*) FILTER (WHERE within_threshold) AS within_threshold,
             count(*) FILTER (WHERE timed) AS timed_requests,
             coalesce(sum(ms) FILTER (WHERE timed), 0) AS sum_response_time_ms,
             min(ms) FILTER (WHERE timed) AS min_response_time_ms,
             max(ms) FILTER (WHERE timed) AS max_response_time_ms
      FROM calls GROUP BY hour) c USING (hour)
LEFT JOIN (SELECT hour, jsonb_object_agg(kind, n) AS errors
           FROM (SELECT hour, coalesce(error_type, 'other') AS kind, count(*) AS n
                 FROM calls WHERE NOT ok GROUP BY 1, 2) x
           GROUP BY hour) e USING (hour)
LEFT JOIN (SELECT hour, jsonb_object_agg(b::text, n) AS latency_hist
           FROM (SELECT hour, ceil(ln(greatest(ms, $5::float8)) / ln($4::float8))::int AS b,
                        count(*) AS n
                 FROM calls WHERE timed GROUP BY 1, 2) y
           GROUP BY hour) h USING (hour)
ORDER BY hour
"""

COUNTERS = ROLLUP_COLUMNS


def _sum_hours(hours: list[asyncpg.Record]) -> dict[str, object]:
    """The daily row as the sum of its hourly rows (the same merge the aggregator does)."""
    day: dict[str, object] = {}
    for name in (*COUNT_COLUMNS, "sum_response_time_ms"):
        day[name] = sum(h[name] for h in hours)
    mins = [h["min_response_time_ms"] for h in hours if h["min_response_time_ms"] is not None]
    maxs = [h["max_response_time_ms"] for h in hours if h["max_response_time_ms"] is not None]
    day["min_response_time_ms"] = min(mins) if mins else None
    day["max_response_time_ms"] = max(maxs) if maxs else None
    day["errors"] = histogram.merge(h["errors"] for h in hours)
    day["latency_hist"] = histogram.merge(h["latency_hist"] for h in hours)
    return day


def _insert_sql(table: str, key: str) -> str:
    cols = ", ".join(COUNTERS)
    values = ", ".join(f"${i + 3}" for i in range(len(COUNTERS)))
    return f"INSERT INTO {table} (service_id, {key}, {cols}) VALUES ($1, $2, {values})"


async def raw_days(conn: asyncpg.Connection) -> set[date]:
    """The days that still have a raw partition."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'check_results'::regclass"
    )
    return {datetime.strptime(r["relname"][-8:], "%Y%m%d").date() for r in rows}


async def rebuild_day(
    conn: asyncpg.Connection, *, service_id: str, day: date, settings: Settings
) -> int:
    """Replace one service-day's rollups by a recompute from raw; return its check count."""
    start = datetime.combine(day, datetime.min.time(), UTC)
    end = start + timedelta(days=1)
    await db.ensure_partitions(conn, APPLIED_TABLE, day, day)
    # One snapshot for the whole day: the checks marked counted are exactly the checks
    # recomputed, even while the recorder stores more. A concurrent aggregator commit on
    # this service-day makes it fail with a serialization error, and it is done again.
    async with conn.transaction(isolation="repeatable_read"):
        # Counted from now on: a later delivery of one of these checks is a duplicate.
        await conn.execute(
            f"""INSERT INTO {APPLIED_TABLE} (check_id, started_at)
                SELECT check_id, started_at FROM watch_server_logs
                WHERE service_id = $1 AND started_at >= $2 AND started_at < $3
                ORDER BY check_id
                ON CONFLICT DO NOTHING""",
            service_id,
            start,
            end,
        )
        # The aggregator locks this row before it touches the service's rollups.
        await conn.execute(
            "INSERT INTO service_state (service_id) VALUES ($1) ON CONFLICT DO NOTHING",
            service_id,
        )
        await conn.execute(
            "SELECT 1 FROM service_state WHERE service_id = $1 FOR UPDATE", service_id
        )
        hours = await conn.fetch(
            CALL_COUNTS, service_id, start, end, histogram.GAMMA, histogram.MIN_VALUE_MS
        )
        await conn.execute(
            "DELETE FROM api_call_logs_hourly WHERE service_id = $1 AND hour >= $2 AND hour < $3",
            service_id,
            start,
            end,
        )
        await conn.execute(
            "DELETE FROM api_call_logs WHERE service_id = $1 AND day = $2", service_id, day
        )
        await conn.execute(
            "DELETE FROM uptime_records WHERE service_id = $1 AND day = $2", service_id, day
        )
        if not hours:
            return 0
        hourly_sql = _insert_sql("api_call_logs_hourly", "hour")
        for h in hours:
            await conn.execute(hourly_sql, service_id, h["hour"], *(h[c] for c in COUNTERS))
        daily = _sum_hours(hours)
        await conn.execute(
            _insert_sql("api_call_logs", "day"), service_id, day, *(daily[c] for c in COUNTERS)
        )
        target = await conn.fetchval("SELECT sla_target FROM services WHERE id = $1", service_id)
        target = settings.sla_target if target is None else float(target)
        ok, total = int(daily["successful_requests"]), int(daily["total_requests"])  # type: ignore[call-overload]
        await conn.execute(
            """INSERT INTO uptime_records (service_id, day, status, uptime, total_requests,
                                           successful_requests, sla_target)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            service_id,
            day,
            rules.day_status(ok, total, target, settings.major_outage_below),
            rules.uptime_percent(ok, total),
            total,
            ok,
            target,
        )
        return int(daily["total_checks"])  # type: ignore[call-overload]


async def rebuild(
    *,
    dsn: str,
    settings: Settings,
    services: list[str] | None,
    first: date,
    last: date,
    progress: Callable[[int], object] | None = None,
) -> tuple[int, int]:
    """Rebuild every (service, day) in range with raw data; return (service-days, checks)."""
    conn = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
    try:
        await conn.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
        await db.check_schema(conn)
        if services is None:
            services = [
                r["service_id"]
                for r in await conn.fetch("SELECT service_id FROM raw_service_ids ORDER BY 1")
            ]
        have = await raw_days(conn)
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        days = [d for d in days if d in have]
        done = checks = 0
        for service_id in services:
            for day in days:
                checks += await _retrying(conn, service_id=service_id, day=day, settings=settings)
                done += 1
                if progress is not None:
                    progress(1)
        return done, checks
    finally:
        await conn.close()


async def _retrying(
    conn: asyncpg.Connection, *, service_id: str, day: date, settings: Settings
) -> int:
    # A conflict with the running aggregator (serialization failure, deadlock) is resolved
    # by PostgreSQL rolling the rebuild back; do that day again.
    for attempt in range(50):
        try:
            return await rebuild_day(conn, service_id=service_id, day=day, settings=settings)
        except asyncpg.exceptions.TransactionRollbackError:
            await asyncio.sleep(min(1.0, 0.02 * (attempt + 1)))
    return await rebuild_day(conn, service_id=service_id, day=day, settings=settings)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, rebuild with a progress bar, print a summary."""
    settings = load_settings("rebuild")
    today = datetime.now(UTC).date()
    parser = argparse.ArgumentParser(
        prog="python -m services.aggregator.rebuild", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--service", action="append", help="service id (repeatable; default all)")
    parser.add_argument(
        "--from",
        dest="first",
        type=_date,
        default=today - timedelta(days=settings.retention_days),
        help="first UTC day (default: the start of the retention window)",
    )
    parser.add_argument("--to", dest="last", type=_date, default=today, help="last UTC day")
    args = parser.parse_args(argv)
    if args.last < args.first:
        parser.error("--to is before --from")

    async def go() -> tuple[int, int]:
        conn = await asyncpg.connect(settings.database_url)
        try:
            services = args.service or [
                r[0] for r in await conn.fetch("SELECT service_id FROM raw_service_ids ORDER BY 1")
            ]
            days = [d for d in await raw_days(conn) if args.first <= d <= args.last]
        finally:
            await conn.close()
        with tqdm(total=len(services) * len(days), unit="service-day", file=sys.stderr) as bar:
            return await rebuild(
                dsn=settings.database_url,
                settings=settings,
                services=services,
                first=args.first,
                last=args.last,
                progress=bar.update,
            )

    try:
        done, checks = asyncio.run(go())
    except (OSError, asyncpg.PostgresError, db.SchemaError) as exc:
        print(f"ERROR rebuild: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"INFO rebuild service_days={done} checks={checks} from={args.first} to={args.last}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
