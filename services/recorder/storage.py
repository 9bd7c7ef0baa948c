"""Where the recorder writes: raw results and the service catalog, batched, idempotent.

Errors: whatever asyncpg raises, unchanged. `is_transient(exc)` tells a database that is
away (connection refused or lost, shutting down, overloaded: retry later) from a row the
database refuses (DataError and friends: retrying will not help, dead-letter it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Protocol, cast
from uuid import UUID

import asyncpg

from services.recorder.partitions import PartitionKeeper
from shared.events import ServiceDefined

# SQLSTATE classes that mean "the database is not available right now", not "bad row":
# 08 connection exception, 53 insufficient resources, 57 operator intervention
# (shutdown, cannot connect now), 40 transaction rollback (serialization, deadlock).
_TRANSIENT_CLASSES = ("08", "53", "57", "40")


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same statement later can succeed."""
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc.sqlstate or "")[:2] in _TRANSIENT_CLASSES
    return isinstance(
        exc, OSError | asyncio.TimeoutError | asyncpg.InterfaceError | asyncpg.InternalClientError
    )


class RowsRefused(Exception):
    """A value cannot be encoded for its column (e.g. a status code beyond smallint)."""


def is_refusal(exc: BaseException) -> bool:
    """True when the rows cannot be stored as they are (bad value, constraint)."""
    if isinstance(exc, RowsRefused):
        return True
    return isinstance(exc, asyncpg.PostgresError) and not is_transient(exc)


@dataclass(frozen=True)
class StoreResult:
    """What one store call did: rows new to the database vs. already there."""

    stored: int
    duplicates: int


class EndpointRow(Protocol):
    """What is stored of one endpoint call (EndpointResult, or the recorder's WireEndpoint)."""

    @property
    def name(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def response_time_ms(self) -> float: ...
    @property
    def status_code(self) -> int | None: ...
    @property
    def ok(self) -> bool: ...
    @property
    def error_type(self) -> str | None: ...
    @property
    def error_message(self) -> str | None: ...
    @property
    def within_threshold(self) -> bool: ...


class CheckRow(Protocol):
    """What is stored of one check (CheckCompleted, or the recorder's WireCheck)."""

    @property
    def check_id(self) -> UUID: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def service_id(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def prober_id(self) -> str: ...
    @property
    def duration_ms(self) -> float: ...
    @property
    def status(self) -> str: ...
    @property
    def trigger(self) -> str: ...
    @property
    def endpoints(self) -> Sequence[EndpointRow]: ...


class RawStore(Protocol):
    """Writes raw check results (watch_server_logs, api_response_times)."""

    async def store(self, *, checks: Sequence[CheckRow]) -> StoreResult:
        """Insert the checks in one transaction; a check already stored is a duplicate."""
        ...


class CatalogStore(Protocol):
    """Writes the service catalog (services)."""

    async def apply(self, *, services: Sequence[ServiceDefined]) -> int:
        """Upsert the definitions (newer wins); return how many changed a row."""
        ...


def _text(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; an error message from a remote server may.
    return value.replace("\x00", "") if value is not None else None


# One-byte codes of the compact raw tables (migration 002; the views decode them);
# asyncpg sends PostgreSQL's "char" as bytes.
STATUS_CODES = {"up": b"u", "degraded": b"g", "down": b"d"}
TRIGGER_CODES = {"scheduled": b"s", "manual": b"m"}
ERROR_CODES = {
    "timeout": b"t",
    "connection": b"c",
    "dns": b"n",
    "tls": b"s",
    "http_status": b"h",
    "assertion": b"a",
    "other": b"o",
}

CHECK_COLUMNS = (
    "check_id",
    "started_at",
    "service_ref",
    "source_ref",
    "response_time_ms",
    "endpoint_ref",
    "status_code",
    "endpoint_count",
    "failed_count",
    "status",
    "trigger",
    "error_type",
    "within_threshold",
    "error_message",
)
ENDPOINT_COLUMNS = (
    "check_id",
    "started_at",
    "response_time_ms",
    "endpoint_ref",
    "endpoint_index",
    "status_code",
    "ok",
    "within_threshold",
    "error_type",
)
# Per-connection staging tables for binary COPY, emptied at each commit. Sent as one
# simple-protocol round trip per batch; "already exists" is only a notice.
_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS recorder_checks (LIKE check_results) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS recorder_endpoints (LIKE endpoint_results) ON COMMIT DELETE ROWS
"""
_MOVE_CHECKS = (
    f"INSERT INTO check_results ({', '.join(CHECK_COLUMNS)}) "
    f"SELECT {', '.join(CHECK_COLUMNS)} FROM recorder_checks ON CONFLICT DO NOTHING"
)
# Each prober's newest stored check, for /api/status: only a newer time is written. Run
# after the batch's commit, in its own statement, so a prober's row (which every concurrent
# batch touches) is locked for one statement, not a whole COPY; rows are locked in id order,
# so two batches never deadlock, and one waits for the other instead of skipping its row
# (skipping lost a newer time when the other batch held an older one).
_LAST_CHECK = """
WITH locked AS MATERIALIZED (
    SELECT id FROM raw_sources WHERE id = ANY($1::integer[]) ORDER BY id FOR UPDATE
)
UPDATE raw_sources AS s SET last_check_at = v.t
FROM unnest($1::integer[], $2::timestamptz[]) AS v(id, t), locked
WHERE s.id = v.id AND locked.id = v.id
  AND (s.last_check_at IS NULL OR s.last_check_at < v.t)
"""
_MOVE_ENDPOINTS = (
    f"INSERT INTO endpoint_results ({', '.join(ENDPOINT_COLUMNS)}) "
    f"SELECT {', '.join(ENDPOINT_COLUMNS)} FROM recorder_endpoints ON CONFLICT DO NOTHING"
)


class Refs:
    """Small integer ids of names (service, region/prober, endpoint), cached per process."""

    def __init__(self) -> None:
        self.services: dict[str, int] = {}
        self.sources: dict[tuple[str, str], int] = {}
        self.endpoints: dict[tuple[str, str, str], int] = {}

    async def resolve(self, conn: asyncpg.Connection, checks: Sequence[CheckRow]) -> None:
        """Get or create the ids the checks need (ids are never deleted, so caching is safe)."""
        for c in checks:
            if c.service_id not in self.services:
                self.services[c.service_id] = await conn.fetchval(
                    "SELECT watch_service_ref($1)", c.service_id
                )
            source = (c.region, c.prober_id)
            if source not in self.sources:
                self.sources[source] = await conn.fetchval(
                    "SELECT watch_source_ref($1, $2)", *source
                )
            for e in c.endpoints:
                key = (c.service_id, _text(e.name) or "", e.method)
                if key not in self.endpoints:
                    self.endpoints[key] = await conn.fetchval(
                        "SELECT watch_endpoint_ref($1, $2, $3)", *key
                    )

    def forget(self) -> None:
        """Drop the cache (a database restored from elsewhere may number names differently)."""
        self.services.clear()
        self.sources.clear()
        self.endpoints.clear()


def check_rows(
    checks: Sequence[CheckRow], refs: Refs
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The check_results rows, and the endpoint_results rows of multi-endpoint checks.

    Raises KeyError when a name has no id in `refs` yet (see Refs.resolve).
    """
    out: list[tuple[object, ...]] = []
    calls: list[tuple[object, ...]] = []
    services, sources, endpoints = refs.services, refs.sources, refs.endpoints
    for c in checks:
        eps = c.endpoints
        if len(eps) == 1:  # nearly every check: the row holds its one call
            e = eps[0]
            ok = e.ok
            out.append(
                (
                    c.check_id,
                    c.started_at,
                    services[c.service_id],
                    sources[(c.region, c.prober_id)],
                    e.response_time_ms,
                    endpoints[(c.service_id, _text(e.name) or "", e.method)],
                    e.status_code,
                    1,
                    0 if ok else 1,
                    STATUS_CODES[c.status],
                    TRIGGER_CODES[c.trigger],
                    ERROR_CODES[e.error_type] if not ok and e.error_type else None,
                    e.within_threshold,
                    None if ok else _text(e.error_message),
                )
            )
            continue
        failed = [e for e in eps if not e.ok]
        first = failed[0] if failed else None
        out.append(
            (
                c.check_id,
                c.started_at,
                services[c.service_id],
                sources[(c.region, c.prober_id)],
                c.duration_ms,
                None,
                None,
                len(eps),
                len(failed),
                STATUS_CODES[c.status],
                TRIGGER_CODES[c.trigger],
                ERROR_CODES[first.error_type] if first and first.error_type else None,
                all(e.within_threshold for e in eps),
                _text(first.error_message) if first else None,
            )
        )
        for index, e in enumerate(eps):
            calls.append(
                (
                    c.check_id,
                    c.started_at,
                    e.response_time_ms,
                    endpoints[(c.service_id, _text(e.name) or "", e.method)],
                    index,
                    e.status_code,
                    e.ok,
                    e.within_threshold,
                    ERROR_CODES[e.error_type] if e.error_type else None,
                )
            )
    return out, calls


def utc_day(check: CheckRow) -> date:
    """The UTC day of a check's start: the partition its rows go to."""
    day = getattr(check, "utc_day", None)  # the recorder's WireCheck has it from decoding
    return day if day is not None else check.started_at.astimezone(UTC).date()


async def _copy(
    conn: asyncpg.Connection,
    table: str,
    rows: list[tuple[object, ...]],
    columns: tuple[str, ...],
) -> None:
    try:
        await conn.copy_records_to_table(table, records=rows, columns=columns)
    except (OverflowError, ValueError) as exc:  # raised while encoding, client side
        raise RowsRefused(f"{type(exc).__name__}: {exc}") from exc


def _last_checks(checks: Sequence[CheckRow], refs: Refs) -> tuple[list[int], list[datetime]]:
    """Each source's newest check in the batch, as (source ids, times)."""
    newest: dict[int, datetime] = {}
    for c in checks:
        ref = refs.sources[(c.region, c.prober_id)]
        if ref not in newest or newest[ref] < c.started_at:
            newest[ref] = c.started_at
    return list(newest), list(newest.values())


def _inserted(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <n>"


class PgRawStore:
    """RawStore on PostgreSQL: binary COPY into staging tables, then one
    `INSERT ... SELECT ... ON CONFLICT DO NOTHING` per raw table, in one transaction."""

    def __init__(self, *, pool: asyncpg.Pool, partitions: PartitionKeeper) -> None:
        self._pool = pool
        self._partitions = partitions
        self._refs = Refs()

    async def store(self, *, checks: Sequence[CheckRow]) -> StoreResult:
        if not checks:
            return StoreResult(0, 0)
        days = {utc_day(c) for c in checks}
        async with self._pool.acquire() as proxy:
            conn = cast(asyncpg.Connection, proxy)  # the pool's proxy behaves as a Connection
            try:
                return await self._insert(conn, checks, days)
            except asyncpg.CheckViolationError as exc:
                # "no partition of relation ... found for row": another replica's maintenance
                # may have changed partitions behind our cache; forget it and try once more.
                if "partition" not in str(exc):
                    raise
                self._partitions.forget()
                return await self._insert(conn, checks, days)
            except asyncpg.ForeignKeyViolationError:
                self._refs.forget()
                raise

    async def _insert(
        self, conn: asyncpg.Connection, checks: Sequence[CheckRow], days: set[date]
    ) -> StoreResult:
        await self._partitions.ensure(conn=conn, days=days)
        try:
            rows, calls = check_rows(checks, self._refs)
        except KeyError:  # a name seen for the first time: get its id, then map again
            await self._refs.resolve(conn, checks)
            rows, calls = check_rows(checks, self._refs)
        async with conn.transaction():
            await conn.execute(_STAGING)
            await _copy(conn, "recorder_checks", rows, CHECK_COLUMNS)
            stored = _inserted(await conn.execute(_MOVE_CHECKS))
            if calls:
                await _copy(conn, "recorder_endpoints", calls, ENDPOINT_COLUMNS)
                await conn.execute(_MOVE_ENDPOINTS)
        # Committed: a failure from here on redelivers the batch, whose rows are then
        # duplicates (skipped) and whose times are written again.
        await conn.execute(_LAST_CHECK, *_last_checks(checks, self._refs))
        return StoreResult(stored=stored, duplicates=len(checks) - stored)


_UPSERT_SERVICE = """
INSERT INTO services (
    id, name, description, active, interval_seconds, timeout_ms, sla_target, endpoints,
    defined_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name, description = EXCLUDED.description, active = EXCLUDED.active,
    interval_seconds = EXCLUDED.interval_seconds, timeout_ms = EXCLUDED.timeout_ms,
    sla_target = EXCLUDED.sla_target, endpoints = EXCLUDED.endpoints,
    defined_at = EXCLUDED.defined_at, updated_at = now()
WHERE services.defined_at <= EXCLUDED.defined_at
"""


class PgCatalogStore:
    """CatalogStore on PostgreSQL: one upsert per definition, oldest first, one transaction."""

    def __init__(self, *, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def apply(self, *, services: Sequence[ServiceDefined]) -> int:
        changed = 0
        async with self._pool.acquire() as conn, conn.transaction():
            for s in sorted(services, key=lambda s: s.defined_at):
                status = await conn.execute(
                    _UPSERT_SERVICE,
                    s.service_id,
                    _text(s.name),
                    _text(s.description),
                    s.active,
                    s.interval_seconds,
                    s.timeout_ms,
                    s.sla_target,
                    [e.model_dump(mode="json", by_alias=True) for e in s.endpoints],
                    s.defined_at,
                )
                changed += _inserted(status)
        return changed
