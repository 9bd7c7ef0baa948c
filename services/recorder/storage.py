"""Where the recorder writes: raw results and the service catalog, batched, idempotent.

Errors: whatever asyncpg raises, unchanged. `is_transient(exc)` tells a database that is
away (connection refused or lost, shutting down, overloaded: retry later) from a row the
database refuses (DataError and friends: retrying will not help, dead-letter it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date
from typing import Protocol, cast

import asyncpg

from services.recorder.partitions import PartitionKeeper
from shared.events import CheckCompleted, ServiceDefined

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


def is_refusal(exc: BaseException) -> bool:
    """True when the database answered and refused the rows (bad value, constraint)."""
    return isinstance(exc, asyncpg.PostgresError) and not is_transient(exc)


@dataclass(frozen=True)
class StoreResult:
    """What one store call did: rows new to the database vs. already there."""

    stored: int
    duplicates: int


class RawStore(Protocol):
    """Writes raw check results (watch_server_logs, api_response_times)."""

    async def store(self, *, checks: Sequence[CheckCompleted]) -> StoreResult:
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


_INSERT_LOGS = """
INSERT INTO watch_server_logs (
    check_id, started_at, service_id, scheduled_at, status, response_time_ms,
    endpoint_count, failed_count, error_type, error_message, region, prober_id, trigger)
SELECT * FROM unnest(
    $1::uuid[], $2::timestamptz[], $3::text[], $4::timestamptz[], $5::text[], $6::real[],
    $7::smallint[], $8::smallint[], $9::text[], $10::text[], $11::text[], $12::text[],
    $13::text[])
ON CONFLICT DO NOTHING
"""

_INSERT_TIMES = """
INSERT INTO api_response_times (
    check_id, endpoint_index, started_at, service_id, endpoint_name, method, status_code,
    response_time_ms, ok, within_threshold, error_type)
SELECT * FROM unnest(
    $1::uuid[], $2::smallint[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
    $7::smallint[], $8::real[], $9::boolean[], $10::boolean[], $11::text[])
ON CONFLICT DO NOTHING
"""


def log_columns(checks: Sequence[CheckCompleted]) -> list[list[object]]:
    """The watch_server_logs columns of the checks, one array per column."""
    cols: list[list[object]] = [[] for _ in range(13)]
    for c in checks:
        failed = [e for e in c.endpoints if not e.ok]
        first = failed[0] if failed else None
        row = (
            c.check_id,
            c.started_at,
            c.service_id,
            c.scheduled_at,
            c.status,
            c.duration_ms,
            len(c.endpoints),
            len(failed),
            first.error_type if first else None,
            _text(first.error_message) if first else None,
            c.region,
            c.prober_id,
            c.trigger,
        )
        for col, value in zip(cols, row, strict=True):
            col.append(value)
    return cols


def time_columns(checks: Sequence[CheckCompleted]) -> list[list[object]]:
    """The api_response_times columns of every endpoint call of the checks."""
    cols: list[list[object]] = [[] for _ in range(11)]
    for c in checks:
        for index, e in enumerate(c.endpoints):
            row = (
                c.check_id,
                index,
                c.started_at,
                c.service_id,
                _text(e.name),
                e.method,
                e.status_code,
                e.response_time_ms,
                e.ok,
                e.within_threshold,
                e.error_type,
            )
            for col, value in zip(cols, row, strict=True):
                col.append(value)
    return cols


def _inserted(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <n>"


class PgRawStore:
    """RawStore on PostgreSQL: two `INSERT ... SELECT FROM unnest(...)` in one transaction."""

    def __init__(self, *, pool: asyncpg.Pool, partitions: PartitionKeeper) -> None:
        self._pool = pool
        self._partitions = partitions

    async def store(self, *, checks: Sequence[CheckCompleted]) -> StoreResult:
        if not checks:
            return StoreResult(0, 0)
        days = {c.started_at.astimezone(UTC).date() for c in checks}
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

    async def _insert(
        self, conn: asyncpg.Connection, checks: Sequence[CheckCompleted], days: set[date]
    ) -> StoreResult:
        await self._partitions.ensure(conn=conn, days=days)
        async with conn.transaction():
            stored = _inserted(await conn.execute(_INSERT_LOGS, *log_columns(checks)))
            await conn.execute(_INSERT_TIMES, *time_columns(checks))
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
