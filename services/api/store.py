"""Reading the rollups: the `MetricsStore` protocol and its PostgreSQL implementation.

Errors: `DatabaseUnavailable` (connection refused or lost, a timeout, or a schema this build
cannot read). Handlers turn it into a stale answer or a 503; nothing else escapes as I/O error.
The api never writes: every statement here is a SELECT, and with a `role` (API_DB_READONLY,
the default) every connection runs `SET ROLE` to the read-only role of migration 010, so
PostgreSQL itself refuses a write.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

import asyncpg

from services.api.metrics import QUANTILES, DayRecord, Rollup, quantile_buckets
from shared.db import SchemaError, check_schema
from shared.logs import get_log
from shared.rollup_row import COUNT_COLUMNS, ROLLUP_COLUMNS

log = get_log(__name__)

ACQUIRE_TIMEOUT = 2.0  # seconds: a database that does not answer is reported quickly
QUERY_TIMEOUT = 3.0
CONNECT_TIMEOUT = 3.0
CLOSE_TIMEOUT = 5.0
RECONNECT_COOLDOWN = 1.0  # between failed pool creations, requests fail fast instead of waiting
CATALOG_TTL = 5.0  # seconds the catalog is reused: one query every 5 s, not one per request
CLOSED_WINDOWS = 2048  # merged closed-day histograms kept (about 15 kB each)

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)

_CONNECT_FAILURES: tuple[type[BaseException], ...] = (
    *_UNAVAILABLE,
    asyncpg.PostgresError,
    SchemaError,
)


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL cannot answer right now."""


@dataclass(frozen=True)
class ServiceInfo:
    """A catalog entry as the recorder registered it."""

    id: str
    name: str
    active: bool
    sla_target: float
    interval_seconds: float


@dataclass(frozen=True)
class ServiceState:
    """A catalog service with the last check the aggregator counted."""

    service_id: str
    name: str
    active: bool
    last_status: str | None
    last_check_at: datetime | None
    sla_breached: bool | None = None


@dataclass(frozen=True)
class ProberSeen:
    """A prober and the newest recorded check it ran."""

    prober_id: str
    region: str
    last_check_at: datetime


class MetricsStore(Protocol):
    """What the handlers read; raises DatabaseUnavailable when it cannot answer."""

    async def ping(self) -> bool:
        """True when the database answers right now (never raises)."""
        ...

    async def get_service(self, service_id: str) -> ServiceInfo | None:
        """One catalog service (active or not), None when unknown."""
        ...

    async def list_services(self, *, active_only: bool) -> list[ServiceInfo]:
        """Catalog services ordered by id."""
        ...

    async def window_totals(
        self,
        service_ids: Sequence[str],
        start: date,
        end: date,
        *,
        histograms: bool = True,
    ) -> dict[str, Rollup]:
        """api_call_logs rows of the days [start, end] summed per service, error counts
        merged; with `histograms`, the latency percentiles of the merged histogram too (as
        `latency_hist` or as `quantile_buckets`)."""
        ...

    async def service_window(
        self, service_id: str, start: date, end: date, *, open_from: date
    ) -> Rollup | None:
        """window_totals of one service with its percentiles; the days before `open_from`
        are closed (rarely change), which lets a store reuse their merged histogram."""
        ...

    async def sla_inputs(
        self, service_id: str, start: date, end: date
    ) -> tuple[Rollup | None, dict[date, DayRecord]]:
        """window_totals without histograms and day_records of one service, read together."""
        ...

    async def daily_by_day(
        self, service_ids: Sequence[str], start: date, end: date
    ) -> dict[str, dict[date, Rollup]]:
        """api_call_logs rows per service and day for the days [start, end]."""
        ...

    async def hourly_rollups(
        self, service_id: str, start: datetime, end: datetime
    ) -> dict[datetime, Rollup]:
        """api_call_logs_hourly rows by hour for [start, end)."""
        ...

    async def day_records(self, service_id: str, start: date, end: date) -> dict[date, DayRecord]:
        """uptime_records rows by day for [start, end]."""
        ...

    async def service_states(self) -> list[ServiceState]:
        """Every catalog service with its last counted check."""
        ...

    async def probers_seen(self, since: datetime) -> list[ProberSeen]:
        """Probers with a recorded check since `since`, newest check each."""
        ...


_ROLLUP_COLUMNS = ", ".join(ROLLUP_COLUMNS)

# A window's rows summed per service: counts and the time sum add up, min/max merge.
_SUMS = ", ".join(
    [
        "service_id",
        *(f"sum({c})::bigint AS {c}" for c in COUNT_COLUMNS),
        "sum(sum_response_time_ms) AS sum_response_time_ms",
        "min(min_response_time_ms) AS min_response_time_ms",
        "max(max_response_time_ms) AS max_response_time_ms",
    ]
)


def _window_totals_sql(*, histograms: bool) -> str:
    """One row per service summing a window of api_call_logs; the merged histogram is
    optional because it is the expensive part and most answers do not need percentiles.

    The histogram comes back as two arrays (buckets in order, their counts), which asyncpg
    decodes in C, instead of a JSON object to parse, merge and sort in Python.
    """
    hist_cte = """, h AS (
    SELECT service_id, array_agg(bucket ORDER BY bucket) AS hist_buckets,
           array_agg(n ORDER BY bucket) AS hist_counts
    FROM (
        SELECT r.service_id, e.key::int AS bucket, sum(e.value::bigint)::bigint AS n
        FROM r, jsonb_each_text(r.latency_hist) e GROUP BY 1, 2 HAVING sum(e.value::bigint) > 0
    ) x
    GROUP BY service_id
)"""
    hist_columns = "h.hist_buckets, h.hist_counts" if histograms else "NULL::int[] AS hist_buckets"
    return f"""
WITH r AS (
    SELECT * FROM api_call_logs
    WHERE service_id = ANY($1::text[]) AND day BETWEEN $2 AND $3
), t AS (
    SELECT {_SUMS} FROM r GROUP BY service_id
), e AS (
    SELECT service_id, jsonb_object_agg(k, n) AS errors FROM (
        SELECT r.service_id, e.key AS k, sum(e.value::bigint) AS n
        FROM r, jsonb_each_text(r.errors) e GROUP BY 1, 2) x
    GROUP BY service_id
){hist_cte if histograms else ""}
SELECT t.*, e.errors, {hist_columns}
FROM t LEFT JOIN e ON e.service_id = t.service_id
{"LEFT JOIN h ON h.service_id = t.service_id" if histograms else ""}
"""


_WINDOW_TOTALS = _window_totals_sql(histograms=True)
_WINDOW_TOTALS_NO_HIST = _window_totals_sql(histograms=False)


# One round trip for an SLA answer: the window's totals and its day records. The one-row
# `(SELECT 1)` keeps the day records when the window has no rollup rows.
def _hist_arrays(where: str) -> str:
    """The merged histogram of the rows of `r` matching `where`, as sorted bucket/count arrays."""
    return f"""
    SELECT array_agg(bucket ORDER BY bucket) AS buckets, array_agg(n ORDER BY bucket) AS counts
    FROM (
        SELECT e.key::int AS bucket, sum(e.value::bigint)::bigint AS n
        FROM r, jsonb_each_text(r.latency_hist) e WHERE {where}
        GROUP BY 1 HAVING sum(e.value::bigint) > 0
    ) x"""


# One service's window in one round trip. The closed days' histogram is merged only when the
# caller's copy ($5, the key it was merged under) no longer matches the rows' versions: the
# key lists each closed day with its row version (xmin, new on every UPDATE), so a late
# result or a rebuild of a closed day changes the key and the merge is done again. The open
# days (from $4: today, still counting) are merged on every request.
_SERVICE_WINDOW = f"""
WITH r AS (
    SELECT *, xmin::text AS version FROM api_call_logs
    WHERE service_id = $1 AND day BETWEEN $2 AND $3
), v AS (
    SELECT md5(coalesce(string_agg(day::text || '/' || version, ',' ORDER BY day), ''))
           AS closed_key
    FROM r WHERE day < $4
), t AS (
    SELECT {_SUMS} FROM r GROUP BY service_id
), e AS (
    SELECT jsonb_object_agg(k, n) AS errors FROM (
        SELECT e.key AS k, sum(e.value::bigint) AS n
        FROM r, jsonb_each_text(r.errors) e GROUP BY 1) x
), hc AS ({_hist_arrays("r.day < $4 AND (SELECT closed_key FROM v) IS DISTINCT FROM $5")}
), ho AS ({_hist_arrays("r.day >= $4")}
)
SELECT t.*, e.errors, v.closed_key, hc.buckets AS closed_buckets, hc.counts AS closed_counts,
       ho.buckets AS open_buckets, ho.counts AS open_counts
FROM v CROSS JOIN e CROSS JOIN hc CROSS JOIN ho LEFT JOIN t ON true
"""

_SLA_INPUTS = f"""
SELECT w.*, d.days, d.statuses, d.uptimes
FROM (SELECT 1) one
LEFT JOIN ({_WINDOW_TOTALS_NO_HIST}) w ON true
CROSS JOIN LATERAL (
    SELECT array_agg(day ORDER BY day) AS days, array_agg(status ORDER BY day) AS statuses,
           array_agg(uptime ORDER BY day) AS uptimes
    FROM uptime_records WHERE service_id = ($1::text[])[1] AND day BETWEEN $2 AND $3
) d
"""


def _rollup(row: asyncpg.Record) -> Rollup:
    values = {c: row[c] for c in ROLLUP_COLUMNS}
    values["errors"] = values["errors"] or {}
    values["latency_hist"] = values["latency_hist"] or {}
    return Rollup(**values)


def _total(row: asyncpg.Record, *, histograms: bool) -> Rollup:
    """A window_totals row: the sums, and the percentile buckets when asked for."""
    values = {c: row[c] for c in ROLLUP_COLUMNS if c != "latency_hist"}
    values["errors"] = values["errors"] or {}
    if histograms:
        values["quantile_buckets"] = quantile_buckets(
            row["hist_buckets"] or (), row["hist_counts"] or (), QUANTILES
        )
    return Rollup(**values)


def _service(row: asyncpg.Record) -> ServiceInfo:
    return ServiceInfo(
        id=row["id"],
        name=row["name"],
        active=row["active"],
        sla_target=row["sla_target"],
        interval_seconds=row["interval_seconds"],
    )


class _ReadOnlyConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection released without asyncpg's reset statement."""

    def get_reset_query(self) -> str:
        # The api sends single SELECTs: no advisory locks, cursors, LISTEN or SETs to undo, so
        # the default reset (one more round trip per release) has nothing to do. The role of
        # `init` is kept either way (RESET ALL never resets it); open transactions are still
        # rolled back by asyncpg.
        return ""


class PostgresStore:
    """MetricsStore over PostgreSQL; connects lazily and survives the database going away."""

    def __init__(self, *, dsn: str, role: str | None = None, max_size: int = 10) -> None:
        self._dsn = dsn
        self._role = role
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        self._failed_at = 0.0
        self._last_error = "not connected yet"
        # The whole catalog, reloaded in one query when older than CATALOG_TTL; an id not in
        # it is looked up alone, so a new service is never a stale 404.
        self._catalog: dict[str, ServiceInfo] = {}
        self._catalog_at = float("-inf")
        self._catalog_lock = asyncio.Lock()
        # (service, first day, open_from) -> the closed days' key and merged histogram.
        self._closed: dict[tuple[str, date, date], tuple[str, dict[int, int]]] = {}

    async def start(self) -> None:
        """Try to connect once; a database that is down now is retried on the next request."""
        try:
            await self._get_pool()
        except DatabaseUnavailable as exc:
            log.warning("database_unavailable_at_start", reason=str(exc))

    async def close(self) -> None:
        """Close the pool."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT)
        except TimeoutError:
            pool.terminate()  # a database that went away must not hold up shutdown

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is not None:
                return self._pool
            if time.monotonic() - self._failed_at < RECONNECT_COOLDOWN:
                raise DatabaseUnavailable(self._last_error)
            pool = None
            try:
                pool = await asyncio.wait_for(self._create_pool(), CONNECT_TIMEOUT)
                async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                    version = await check_schema(conn)  # type: ignore[arg-type]
            # Any server error here (e.g. the database not created yet) means "not usable yet".
            except _CONNECT_FAILURES as exc:
                if pool is not None:
                    pool.terminate()
                self._failed_at = time.monotonic()
                self._last_error = _describe(exc)
                raise DatabaseUnavailable(self._last_error) from exc
            log.info("database_connected", schema_version=version)
            self._pool = pool
            return pool

    async def _create_pool(self) -> asyncpg.Pool:
        role = self._role

        async def init(conn: asyncpg.Connection) -> None:
            await conn.set_type_codec(
                "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
            )
            if role is None:
                return
            try:
                # The role name is validated by ApiSettings (a plain identifier).
                await conn.execute(f"SET ROLE {role}")
            except asyncpg.UndefinedObjectError as exc:
                raise SchemaError(
                    f"the read-only role {role} does not exist: run `make migrate` "
                    "(migration 010 creates it)"
                ) from exc
            except asyncpg.InsufficientPrivilegeError as exc:
                raise SchemaError(
                    f"the api's database user may not SET ROLE {role}: GRANT {role} TO it, "
                    "or set API_DB_READONLY=0"
                ) from exc

        return await asyncpg.create_pool(
            self._dsn,
            min_size=1,
            max_size=self._max_size,
            init=init,
            connection_class=_ReadOnlyConnection,
            server_settings={"timezone": "UTC", "application_name": "watch-api"},
        )

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        pool = await self._get_pool()
        async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
            yield conn

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        # One retry: after a restart, a pooled connection fails once before it is replaced.
        for attempt in (1, 2):
            try:
                async with self._connection() as conn:
                    return await conn.fetch(sql, *args, timeout=QUERY_TIMEOUT)
            except DatabaseUnavailable:
                raise
            except _UNAVAILABLE as exc:
                if attempt == 2 or isinstance(exc, TimeoutError):
                    raise DatabaseUnavailable(_describe(exc)) from exc
        raise AssertionError("unreachable")

    async def ping(self) -> bool:
        try:
            await self._fetch("SELECT 1")
        except DatabaseUnavailable:
            return False
        return True

    async def get_service(self, service_id: str) -> ServiceInfo | None:
        if time.monotonic() - self._catalog_at >= CATALOG_TTL:
            async with self._catalog_lock:  # one reload, however many requests wait for it
                if time.monotonic() - self._catalog_at >= CATALOG_TTL:
                    services = await self.list_services(active_only=False)
                    self._catalog = {s.id: s for s in services}
                    self._catalog_at = time.monotonic()
        found = self._catalog.get(service_id)
        if found is not None:
            return found
        rows = await self._fetch(
            "SELECT id, name, active, sla_target, interval_seconds FROM services WHERE id = $1",
            service_id,
        )
        if not rows:
            return None
        self._catalog[service_id] = found = _service(rows[0])
        return found

    async def list_services(self, *, active_only: bool) -> list[ServiceInfo]:
        rows = await self._fetch(
            "SELECT id, name, active, sla_target, interval_seconds FROM services "
            "WHERE active OR NOT $1 ORDER BY id",
            active_only,
        )
        return [_service(r) for r in rows]

    async def window_totals(
        self,
        service_ids: Sequence[str],
        start: date,
        end: date,
        *,
        histograms: bool = True,
    ) -> dict[str, Rollup]:
        # Summed and merged inside PostgreSQL (in C, on its own core): the api receives
        # one row per service instead of one per day, and decodes one histogram.
        sql = _WINDOW_TOTALS if histograms else _WINDOW_TOTALS_NO_HIST
        rows = await self._fetch(sql, list(service_ids), start, end)
        return {row["service_id"]: _total(row, histograms=histograms) for row in rows}

    async def service_window(
        self, service_id: str, start: date, end: date, *, open_from: date
    ) -> Rollup | None:
        slot = (service_id, start, open_from)
        cached = self._closed.get(slot)
        (row,) = await self._fetch(
            _SERVICE_WINDOW, service_id, start, end, open_from, cached[0] if cached else None
        )
        if row["service_id"] is None:
            return None
        if cached is not None and cached[0] == row["closed_key"]:
            closed = cached[1]
        else:
            closed = dict(zip(row["closed_buckets"] or (), row["closed_counts"] or (), strict=True))
            if len(self._closed) >= CLOSED_WINDOWS:
                self._closed.clear()  # a crude bound; refilled on the next requests
            self._closed[slot] = (row["closed_key"], closed)
        merged = closed
        if row["open_buckets"]:
            merged = dict(closed)
            for bucket, count in zip(row["open_buckets"], row["open_counts"], strict=True):
                merged[bucket] = merged.get(bucket, 0) + count
        ordered = sorted(merged)
        values = {c: row[c] for c in ROLLUP_COLUMNS if c != "latency_hist"}
        values["errors"] = values["errors"] or {}
        values["quantile_buckets"] = quantile_buckets(
            ordered, [merged[b] for b in ordered], QUANTILES
        )
        return Rollup(**values)

    async def sla_inputs(
        self, service_id: str, start: date, end: date
    ) -> tuple[Rollup | None, dict[date, DayRecord]]:
        (row,) = await self._fetch(_SLA_INPUTS, [service_id], start, end)
        total = None if row["service_id"] is None else _total(row, histograms=False)
        records = {
            d: DayRecord(day=d, status=status, uptime=uptime)
            for d, status, uptime in zip(
                row["days"] or (), row["statuses"] or (), row["uptimes"] or (), strict=True
            )
        }
        return total, records

    async def daily_by_day(
        self, service_ids: Sequence[str], start: date, end: date
    ) -> dict[str, dict[date, Rollup]]:
        rows = await self._fetch(
            f"SELECT service_id, day, {_ROLLUP_COLUMNS} FROM api_call_logs "
            "WHERE service_id = ANY($1::text[]) AND day BETWEEN $2 AND $3",
            list(service_ids),
            start,
            end,
        )
        out: dict[str, dict[date, Rollup]] = {sid: {} for sid in service_ids}
        for row in rows:
            out.setdefault(row["service_id"], {})[row["day"]] = _rollup(row)
        return out

    async def hourly_rollups(
        self, service_id: str, start: datetime, end: datetime
    ) -> dict[datetime, Rollup]:
        rows = await self._fetch(
            f"SELECT hour, {_ROLLUP_COLUMNS} FROM api_call_logs_hourly "
            "WHERE service_id = $1 AND hour >= $2 AND hour < $3",
            service_id,
            start,
            end,
        )
        return {row["hour"]: _rollup(row) for row in rows}

    async def day_records(self, service_id: str, start: date, end: date) -> dict[date, DayRecord]:
        rows = await self._fetch(
            "SELECT day, status, uptime FROM uptime_records "
            "WHERE service_id = $1 AND day BETWEEN $2 AND $3",
            service_id,
            start,
            end,
        )
        return {
            r["day"]: DayRecord(day=r["day"], status=r["status"], uptime=r["uptime"]) for r in rows
        }

    async def service_states(self) -> list[ServiceState]:
        rows = await self._fetch(
            "SELECT s.id, s.name, s.active, st.last_status, st.last_started_at, st.sla_breached "
            "FROM services s LEFT JOIN service_state st ON st.service_id = s.id ORDER BY s.id"
        )
        return [
            ServiceState(
                service_id=r["id"],
                name=r["name"],
                active=r["active"],
                last_status=r["last_status"],
                last_check_at=r["last_started_at"],
                sla_breached=r["sla_breached"],
            )
            for r in rows
        ]

    async def probers_seen(self, since: datetime) -> list[ProberSeen]:
        # Kept by the recorder with each batch (migration 004): no raw rows are read.
        rows = await self._fetch(
            "SELECT prober_id, region, last_check_at FROM raw_sources "
            "WHERE last_check_at >= $1 ORDER BY prober_id, region",
            since,
        )
        return [
            ProberSeen(
                prober_id=r["prober_id"], region=r["region"], last_check_at=r["last_check_at"]
            )
            for r in rows
        ]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SchemaError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "the database did not answer in time"
    if isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, _UNAVAILABLE):
        return f"PostgreSQL refused the connection ({type(exc).__name__})"
    # The class name only: driver messages can carry host names and ports.
    return f"cannot reach PostgreSQL ({type(exc).__name__})"
