"""Daily partitions of the raw tables: created before rows need them, dropped after retention."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import asyncpg

from shared.db import drop_partitions_before, ensure_partitions, partition_window

AHEAD_DAYS = 7
# The physical raw tables (migration 002); watch_server_logs and api_response_times are views.
RAW_TABLES = ("check_results", "endpoint_results")
# Advisory lock keys ("RECD" + n): creating partitions is serialised between replicas
# (two CREATE TABLE of the same partition would race); maintenance runs on one replica.
_CREATE_LOCK = 0x5245_4344_0001
_MAINTENANCE_LOCK = 0x5245_4344_0002

DayClass = Literal["ok", "expired", "future"]


def utc_today() -> date:
    """Today's date in UTC."""
    return datetime.now(UTC).date()


@dataclass(frozen=True)
class Maintenance:
    """What one maintenance run did."""

    created: int
    dropped: int


class PartitionKeeper:
    """Knows which days have partitions, creates missing ones, runs retention."""

    def __init__(
        self,
        *,
        retention_days: int,
        today: Callable[[], date] = utc_today,
        ahead_days: int = AHEAD_DAYS,
        lock_timeout_ms: int = 5000,
    ) -> None:
        self.retention_days = retention_days
        self.ahead_days = ahead_days
        self.lock_timeout_ms = lock_timeout_ms
        self._today = today
        self._known: set[date] = set()
        self._window: tuple[date, tuple[date, date]] | None = None
        # With the real clock the window changes only at UTC midnight; it is asked for once
        # per message, and reading the time as an epoch costs far less than a date.
        self._valid_until = 0.0

    def window(self) -> tuple[date, date]:
        """The first and last day that may hold rows now."""
        if self._window is not None and time.time() < self._valid_until:
            return self._window[1]
        today = self._today()
        if self._window is None or self._window[0] != today:
            self._window = (today, partition_window(today, self.retention_days, self.ahead_days))
        if self._today is utc_today:
            midnight = datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC)
            self._valid_until = midnight.timestamp()
        return self._window[1]

    def classify(self, day: date) -> DayClass:
        """Whether a row of this day is stored, already past retention, or too far ahead."""
        first, last = self.window()
        if day < first:
            return "expired"
        if day > last:
            return "future"
        return "ok"

    def forget(self) -> None:
        """Drop the cache of known partitions (they changed behind our back)."""
        self._known.clear()

    async def ensure(self, *, conn: asyncpg.Connection, days: Iterable[date]) -> int:
        """Make sure both raw tables have partitions for these days; return how many were new."""
        missing = sorted(set(days) - self._known)
        if not missing:
            return 0
        created = 0
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _CREATE_LOCK)
            for day in missing:
                for table in RAW_TABLES:
                    created += await ensure_partitions(conn, table, day, day)
        self._known.update(missing)
        return created

    async def maintain(self, *, conn: asyncpg.Connection) -> Maintenance | None:
        """Create the window's partitions and drop expired ones; None if another replica is.

        Dropping a partition is a DROP TABLE (no row is deleted one by one), but it needs a
        brief exclusive lock on the parent: past `lock_timeout_ms` of waiting behind a long
        reader it gives up (asyncpg.LockNotAvailableError) instead of stalling every writer
        queued behind it, and the next run tries again.
        """
        first, last = self.window()
        async with conn.transaction():
            got = await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _MAINTENANCE_LOCK)
            if not got:
                return None
            await conn.execute(f"SET LOCAL lock_timeout = {int(self.lock_timeout_ms)}")
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _CREATE_LOCK)
            created = dropped = 0
            for table in RAW_TABLES:
                created += await ensure_partitions(conn, table, first, last)
                dropped += await drop_partitions_before(conn, table, first)
        self._known = {first + timedelta(days=n) for n in range((last - first).days + 1)}
        return Maintenance(created=created, dropped=dropped)
