"""Data for bench_api.py: raw results in whatever raw layout the migrations made, and the
matching rollups, generated in SQL (generate_series into an unlogged stage table).

Speed (100 M results is the goal): one UTC day per transaction, `WORKERS` connections working
on different days at once (different partitions and rollup keys, so they never wait for each
other), and time-ordered check ids (`uuidv7()` where PostgreSQL has it), so the primary key
index is appended to instead of written at random places.

The raw layout is read from the catalog at run time, because it changes between schema
versions: the version-1 partitioned tables `watch_server_logs` + `api_response_times`, or the
compact `check_results` (one row per one-endpoint check, names as small ids) with the seed's
names as views. Each raw column gets a value by its name and type; a NOT NULL column without a
default that this file does not know stops the run with its name, never a silent guess.
Rollups come from the same stage rows, so they equal what the raw tables hold.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from shared.rollup_row import COUNT_COLUMNS

WORKERS = 2  # connections generating at once: one per core of the benchmark machine
LATENCY_THRESHOLD_MS = 500.0
GAMMA_SQL = "ln((1 + 0.01) / (1 - 0.01))"  # shared.histogram: 1 % relative accuracy


@dataclass(frozen=True)
class Column:
    """A raw column to fill."""

    name: str
    type: str
    not_null: bool
    has_default: bool


@dataclass
class RawLayout:
    """The raw tables to fill and their columns."""

    kind: str  # "v1", "compact" or "none"
    tables: dict[str, list[Column]] = field(default_factory=dict)

    def describe(self) -> str:
        if self.kind == "none":
            return "not recognised: rollups only, no raw baseline"
        cols = "; ".join(f"{t}({len(c)} columns)" for t, c in self.tables.items())
        return f"{self.kind}: {cols}"


async def _relkind(conn: asyncpg.Connection, name: str) -> str | None:
    kind = await conn.fetchval(
        "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relname = $1",
        name,
    )
    if isinstance(kind, bytes):  # asyncpg reads "char" as bytes
        kind = kind.decode()
    return None if kind is None else str(kind)


async def _columns(conn: asyncpg.Connection, table: str) -> list[Column]:
    rows = await conn.fetch(
        "SELECT attname, format_type(atttypid, atttypmod) AS type, attnotnull, "
        "atthasdef OR attidentity <> '' OR attgenerated <> '' AS has_default "
        "FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attnum",
        table,
    )
    return [Column(r["attname"], r["type"], r["attnotnull"], r["has_default"]) for r in rows]


async def detect_layout(conn: asyncpg.Connection) -> RawLayout:
    """Which raw tables exist, read from the catalog."""
    if await _relkind(conn, "watch_server_logs") == "p" and (
        await _relkind(conn, "api_response_times") == "p"
    ):
        names = ("watch_server_logs", "api_response_times")
        return RawLayout("v1", {t: await _columns(conn, t) for t in names})
    if await _relkind(conn, "check_results") == "p":
        return RawLayout("compact", {"check_results": await _columns(conn, "check_results")})
    return RawLayout("none")


def _expression(col: Column) -> str | None:
    """The SQL value of a raw column from stage row `g`; None when it may be left out."""
    char = col.type == '"char"'
    known = {
        "check_id": "g.check_id",
        "started_at": "g.started_at",
        "scheduled_at": "g.started_at",
        "service_id": "g.service_id",
        "service_ref": "g.service_ref",
        "source_ref": "g.source_ref",
        "endpoint_ref": "g.endpoint_ref",
        "response_time_ms": "g.rt",
        "status_code": "g.status_code",
        "endpoint_count": "1",
        "failed_count": "CASE WHEN g.ok THEN 0 ELSE 1 END",
        "status": (
            "(CASE g.status WHEN 'up' THEN 'u' WHEN 'degraded' THEN 'g' ELSE 'd' END)::\"char\""
            if char
            else "g.status"
        ),
        "trigger": "'s'::\"char\"" if char else "'scheduled'",
        "error_type": (
            "(CASE g.error_type WHEN 'timeout' THEN 't' WHEN 'http_status' THEN 'h' END)::\"char\""
            if char
            else "g.error_type"
        ),
        "error_message": (
            "CASE g.error_type WHEN 'timeout' THEN 'timed out after 10000 ms' "
            "WHEN 'http_status' THEN 'HTTP 500' END"
        ),
        "within_threshold": "g.within",
        "ok": "g.ok",
        "region": "'bench'",
        "prober_id": "'bench-prober'",
        "endpoint_index": "0",
        "endpoint_name": "'api'",
        "method": "'GET'",
    }
    if col.name in known:
        return known[col.name]
    if col.not_null and not col.has_default:
        raise SystemExit(
            f"bench-api: raw column {col.name} ({col.type}) is NOT NULL without a default and "
            "bench/api_generate.py does not know it; teach _expression() its value"
        )
    return None


def _insert_sql(table: str, columns: list[Column], stage: str) -> str:
    pairs = [(c.name, e) for c in columns if (e := _expression(c)) is not None]
    names = ", ".join(n for n, _ in pairs)
    values = ", ".join(e for _, e in pairs)
    return f"INSERT INTO {table} ({names}) SELECT {values} FROM {stage} g"


async def prepare(
    conn: asyncpg.Connection,
    *,
    sids: list[str],
    first: date,
    last: date,
    interval: float,
    sla_targets: dict[str, float],
) -> RawLayout:
    """Catalog, partitions and the per-service ids the raw layout needs."""
    layout = await detect_layout(conn)
    now = datetime.now(UTC)
    await conn.executemany(
        "INSERT INTO services (id, name, interval_seconds, timeout_ms, sla_target, endpoints, "
        "defined_at) VALUES ($1, $2, $3, 10000, $4, $5, $6)",
        [
            (
                sid,
                f"Bench {sid}",
                interval,
                sla_targets[sid],
                '[{"name": "api", "method": "GET", "url": "http://127.0.0.1:9/"}]',
                now,
            )
            for sid in sids
        ],
    )
    await conn.executemany(
        "INSERT INTO service_state (service_id, last_status, last_started_at) "
        "VALUES ($1, 'up', $2)",
        [(sid, now) for sid in sids],
    )
    await conn.execute(
        "CREATE UNLOGGED TABLE bench_ids (s integer, service_id text, service_ref integer, "
        "endpoint_ref smallint, source_ref integer, fail_p double precision)"
    )
    refs: dict[str, tuple[int | None, int | None]] = dict.fromkeys(sids, (None, None))
    source_ref = None
    if layout.kind == "compact":
        source_ref = await conn.fetchval("SELECT watch_source_ref('bench', 'bench-prober')")
        for sid in sids:
            refs[sid] = (
                await conn.fetchval("SELECT watch_service_ref($1)", sid),
                await conn.fetchval("SELECT watch_endpoint_ref($1, 'api', 'GET')", sid),
            )
    # Failure rates from 0.05 % to 1 %, so some services meet their targets and some do not.
    await conn.executemany(
        "INSERT INTO bench_ids VALUES ($1, $2, $3, $4, $5, $6)",
        [
            (i, sid, refs[sid][0], refs[sid][1], source_ref, 0.0005 + (i % 20) * 0.0005)
            for i, sid in enumerate(sids, start=1)
        ],
    )
    if layout.kind != "none":
        for table in ("watch_server_logs", "api_response_times"):
            await conn.execute(
                "SELECT watch_ensure_partitions($1, $2, $3)",
                table,
                first - timedelta(days=1),
                last + timedelta(days=1),
            )
    return layout


STAGE_SQL = """
CREATE UNLOGGED TABLE {stage} AS
SELECT check_id, started_at, service_id, service_ref, endpoint_ref, source_ref,
       CASE WHEN failed THEN 'down' WHEN rt > {threshold} THEN 'degraded' ELSE 'up' END
           AS status,
       CASE WHEN failed AND timed_out THEN 10000::real ELSE rt END AS rt,
       (CASE WHEN failed AND timed_out THEN NULL WHEN failed THEN 500 ELSE 200 END)::smallint
           AS status_code,
       NOT failed AS ok,
       NOT failed AND rt <= {threshold} AS within,
       CASE WHEN failed AND timed_out THEN 'timeout' WHEN failed THEN 'http_status' END
           AS error_type
FROM (
    SELECT {new_id}() AS check_id, t + i.shift AS started_at,
           i.service_id, i.service_ref, i.endpoint_ref, i.source_ref,
           random() < i.fail_p AS failed,
           random() < 0.5 AS timed_out,
           greatest(1.0, 80 * exp(0.6 * sqrt(-2 * ln(1 - random()))
                                  * cos(2 * pi() * random())))::real AS rt
    FROM generate_series($1::timestamptz, $2::timestamptz - interval '1 microsecond',
                         make_interval(secs => $4)) AS t
    -- Per service once per chunk (a UTC day, number $6), not per row: its place in the
    -- interval, and its failure rate, where about 1 % of service-days are an outage day
    -- with 20 % failures.
    CROSS JOIN (
        SELECT service_id, service_ref, endpoint_ref, source_ref,
               make_interval(secs => $3 + (s - 1) * $4 / $5) AS shift,
               CASE WHEN (s * 7919 + $6 * 104729) % 97 = 0 THEN 0.2 ELSE fail_p END AS fail_p
        FROM bench_ids
    ) i
) x
-- The chunk's own day only, so workers on neighbouring days never touch the same rollup row.
WHERE started_at >= $7 AND started_at < $2 AND started_at < now()
"""


def _rollup_sql(table: str, key: str, key_expr: str, where: str, stage: str) -> str:
    """Upsert the stage rows' counters into a rollup table (daily or hourly)."""
    counters = [*COUNT_COLUMNS, "sum_response_time_ms"]
    added = ",\n    ".join(f"{c} = a.{c} + EXCLUDED.{c}" for c in counters)
    return f"""
WITH base AS (
    SELECT service_id, {key_expr} AS {key}, status, ok, within, status_code,
           rt::double precision AS rt, error_type
    FROM {stage} {where}
), c AS (
    SELECT service_id, {key},
           count(*) AS total_checks,
           count(*) FILTER (WHERE status = 'up') AS up_checks,
           count(*) FILTER (WHERE status = 'degraded') AS degraded_checks,
           count(*) FILTER (WHERE status = 'down') AS down_checks,
           count(*) AS total_requests,
           count(*) FILTER (WHERE ok) AS successful_requests,
           count(*) FILTER (WHERE NOT ok) AS failed_requests,
           count(*) FILTER (WHERE within) AS within_threshold,
           count(*) FILTER (WHERE status_code IS NOT NULL) AS timed_requests,
           coalesce(sum(rt) FILTER (WHERE status_code IS NOT NULL), 0) AS sum_response_time_ms,
           min(rt) FILTER (WHERE status_code IS NOT NULL) AS min_response_time_ms,
           max(rt) FILTER (WHERE status_code IS NOT NULL) AS max_response_time_ms,
           jsonb_strip_nulls(jsonb_build_object(
               'timeout', nullif(count(*) FILTER (WHERE error_type = 'timeout'), 0),
               'http_status', nullif(count(*) FILTER (WHERE error_type = 'http_status'), 0)
           )) AS errors
    FROM base GROUP BY 1, 2
), b AS (
    SELECT service_id, {key}, ceil(ln(greatest(rt, 0.001)) / {GAMMA_SQL})::int AS bucket,
           count(*) AS n
    FROM base WHERE status_code IS NOT NULL GROUP BY 1, 2, 3
), h AS (
    SELECT service_id, {key}, jsonb_object_agg(bucket::text, n) AS hist FROM b GROUP BY 1, 2
)
INSERT INTO {table} AS a (service_id, {key}, {", ".join(counters)}, min_response_time_ms,
    max_response_time_ms, errors, latency_hist)
SELECT c.service_id, c.{key}, {", ".join("c." + x for x in counters)}, c.min_response_time_ms,
       c.max_response_time_ms, c.errors, coalesce(h.hist, '{{}}'::jsonb)
FROM c LEFT JOIN h ON h.service_id = c.service_id AND h.{key} = c.{key}
ON CONFLICT (service_id, {key}) DO UPDATE SET
    {added},
    min_response_time_ms = least(a.min_response_time_ms, EXCLUDED.min_response_time_ms),
    max_response_time_ms = greatest(a.max_response_time_ms, EXCLUDED.max_response_time_ms),
    errors = watch_hist_merge(a.errors, EXCLUDED.errors),
    latency_hist = watch_hist_merge(a.latency_hist, EXCLUDED.latency_hist)
"""


DAY_RECORDS_SQL = """
INSERT INTO uptime_records AS u (service_id, day, status, uptime, total_requests,
    successful_requests, sla_target)
SELECT a.service_id, a.day,
       CASE WHEN 100.0 * a.successful_requests / a.total_requests >= s.sla_target THEN 'o'
            WHEN 100.0 * a.successful_requests / a.total_requests >= $1 THEN 'po'
            ELSE 'mo' END,
       100.0 * a.successful_requests / a.total_requests, a.total_requests,
       a.successful_requests, s.sla_target
FROM api_call_logs a JOIN services s ON s.id = a.service_id
WHERE a.total_requests > 0
ON CONFLICT (service_id, day) DO UPDATE SET
    status = EXCLUDED.status, uptime = EXCLUDED.uptime, total_requests = EXCLUDED.total_requests,
    successful_requests = EXCLUDED.successful_requests, sla_target = EXCLUDED.sla_target
"""


async def generate_step(
    pool: asyncpg.Pool,
    *,
    layout: RawLayout,
    sids: list[str],
    first: date,
    last: date,
    interval: float,
    offset: float,
    hourly_days: int,
    major_outage_below: float,
    progress: Callable[[str], None],
) -> int:
    """One pass of raw results over [first, last] and its rollups; returns the raw rows."""
    hourly_from = datetime.now(UTC) - timedelta(days=hourly_days)
    new_id = (
        "uuidv7"
        if await pool.fetchval("SELECT current_setting('server_version_num')::int >= 180000")
        else "gen_random_uuid"
    )
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    queue = list(reversed(days))
    total = 0
    phases: dict[str, float] = {}
    started_all = time.monotonic()
    reported = started_all

    async def one_chunk(conn: Any, worker: int, day: date) -> int:
        stage = f"bench_stage_{worker}"
        lo = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
        hi = lo + timedelta(days=1)
        daily = _rollup_sql(
            "api_call_logs", "day", "(started_at AT TIME ZONE 'UTC')::date", "", stage
        )
        hourly = _rollup_sql(
            "api_call_logs_hourly", "hour", "date_trunc('hour', started_at)",
            "WHERE started_at >= $1", stage,
        )  # fmt: skip
        async with conn.transaction():
            t = time.monotonic()
            sql = STAGE_SQL.format(threshold=LATENCY_THRESHOLD_MS, stage=stage, new_id=new_id)
            # Every chunk steps on one grid (first + k * interval), starting two intervals
            # early so the services shifted furthest still reach the day's first seconds.
            base = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
            k = int((lo - base).total_seconds() // interval) - 2
            grid_start = base + timedelta(seconds=k * interval)
            day_number = (day - date(2000, 1, 1)).days
            await conn.execute(sql, grid_start, hi, offset, interval, len(sids), day_number, lo)
            rows = int(await conn.fetchval(f"SELECT count(*) FROM {stage}"))
            t = _note(phases, "stage", t)
            for table, cols in layout.tables.items():
                await conn.execute(_insert_sql(table, cols, stage))
            t = _note(phases, "raw insert", t)
            await conn.execute(daily)
            t = _note(phases, "daily rollup", t)
            if hi > hourly_from:
                await conn.execute(hourly, hourly_from)
                t = _note(phases, "hourly rollup", t)
            await conn.execute(f"DROP TABLE {stage}")
        return rows

    async def worker(index: int) -> None:
        nonlocal total, reported
        async with pool.acquire() as conn:
            while queue:
                rows = await one_chunk(conn, index, queue.pop())
                total += rows
                now = time.monotonic()
                if now - reported >= 30 or not queue:
                    reported = now
                    rate = total / max(now - started_all, 1e-9)
                    done = len(days) - len(queue)
                    progress(f"{done}/{len(days)} days, {total:,} results, {rate:,.0f}/s")

    await asyncio.gather(*(worker(i) for i in range(WORKERS)))
    spent = ", ".join(f"{k} {v:.0f} s" for k, v in phases.items())
    took = time.monotonic() - started_all
    progress(f"{total:,} results in {took:.0f} s (summed over workers: {spent})")
    async with pool.acquire() as conn:
        await conn.execute(DAY_RECORDS_SQL, major_outage_below)
        started = time.monotonic()
        await conn.execute("VACUUM (ANALYZE)")
    progress(f"VACUUM ANALYZE in {time.monotonic() - started:.0f} s")
    return total


def _note(phases: dict[str, float], name: str, since: float) -> float:
    """Add the time since `since` to a phase; returns now."""
    now = time.monotonic()
    phases[name] = phases.get(name, 0.0) + now - since
    return now
