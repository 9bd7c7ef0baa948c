"""Pure rollup arithmetic: what a set of checks adds to the daily and hourly counters.

No I/O here, so the accounting is unit-tested on hand-made checks. Counters are over
endpoint calls ("requests"); only calls that got an HTTP status feed the latency figures.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from uuid import UUID

from shared import histogram
from shared.events import CheckCompleted, CheckStatus
from shared.rollup_row import COUNT_COLUMNS, ROLLUP_COLUMNS


@dataclass
class Counters:
    """What some checks add to one rollup row (same shape as api_call_logs)."""

    total_checks: int = 0
    up_checks: int = 0
    degraded_checks: int = 0
    down_checks: int = 0
    total_requests: int = 0
    successful_requests: int = 0
    failed_requests: int = 0
    within_threshold: int = 0
    timed_requests: int = 0
    sum_response_time_ms: float = 0.0
    min_response_time_ms: float | None = None
    max_response_time_ms: float | None = None
    errors: dict[str, int] = field(default_factory=dict)
    latency_hist: dict[str, int] = field(default_factory=dict)

    def add_check(self, check: CheckCompleted) -> None:
        """Count one check and each of its endpoint calls."""
        self.total_checks += 1
        if check.status == "up":
            self.up_checks += 1
        elif check.status == "degraded":
            self.degraded_checks += 1
        else:
            self.down_checks += 1
        for call in check.endpoints:
            self.total_requests += 1
            if call.ok:
                self.successful_requests += 1
            else:
                self.failed_requests += 1
                kind = call.error_type or "other"
                self.errors[kind] = self.errors.get(kind, 0) + 1
            if call.within_threshold:
                self.within_threshold += 1
            if call.status_code is not None:
                ms = as_stored(call.response_time_ms)
                self.timed_requests += 1
                self.sum_response_time_ms += ms
                lo, hi = self.min_response_time_ms, self.max_response_time_ms
                self.min_response_time_ms = ms if lo is None else min(lo, ms)
                self.max_response_time_ms = ms if hi is None else max(hi, ms)
                histogram.add(self.latency_hist, ms)

    def merge(self, other: Counters) -> None:
        """Add another row's counters into this one (what the SQL upsert does)."""
        for name in (*COUNT_COLUMNS, "sum_response_time_ms"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.min_response_time_ms = _pick(
            min, self.min_response_time_ms, other.min_response_time_ms
        )
        self.max_response_time_ms = _pick(
            max, self.max_response_time_ms, other.max_response_time_ms
        )
        self.errors = histogram.merge([self.errors, other.errors])
        self.latency_hist = histogram.merge([self.latency_hist, other.latency_hist])


_REAL = struct.Struct("<f")
REAL_MAX = 3.4028234663852886e38  # the largest PostgreSQL `real`


def as_stored(ms: float) -> float:
    """The value as the raw tables keep it (`real`), so a rebuild from raw data adds up the same."""
    return float(_REAL.unpack(_REAL.pack(ms))[0])


def _pick(fn: object, a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return fn(a, b)  # type: ignore[operator]


def day_of(started_at: datetime) -> date:
    """The UTC day a check counts on."""
    return started_at.astimezone(UTC).date()


def hour_of(started_at: datetime) -> datetime:
    """The UTC hour a check counts in."""
    return started_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass
class Rollups:
    """Contributions of a set of checks per (service, day) and per (service, hour)."""

    daily: dict[tuple[str, date], Counters] = field(default_factory=dict)
    hourly: dict[tuple[str, datetime], Counters] = field(default_factory=dict)


def rollup(checks: Iterable[CheckCompleted]) -> Rollups:
    """Sum the contributions of checks per (service, day) and (service, hour)."""
    out = Rollups()
    for check in checks:
        out.daily.setdefault((check.service_id, day_of(check.started_at)), Counters()).add_check(
            check
        )
        out.hourly.setdefault((check.service_id, hour_of(check.started_at)), Counters()).add_check(
            check
        )
    return out


def columns(
    rows: dict[tuple[str, date], Counters] | dict[tuple[str, datetime], Counters],
) -> list[list[object]]:
    """The rows as column arrays sorted by key (for `unnest`; sorted so replicas lock in order)."""
    keys = sorted(rows)
    cols: list[list[object]] = [[k[0] for k in keys], [k[1] for k in keys]]
    counters = [rows[k] for k in keys]  # type: ignore[index]
    for name in ROLLUP_COLUMNS[:-2]:  # the jsonb maps follow, as JSON text
        cols.append([getattr(c, name) for c in counters])
    cols.append([json.dumps(c.errors) for c in counters])
    cols.append([json.dumps(c.latency_hist) for c in counters])
    return cols


def is_well_formed(check: CheckCompleted) -> str | None:
    """Why a parsed check cannot be counted, or None when it can."""
    for call in check.endpoints:
        if not math.isfinite(call.response_time_ms):
            return f"endpoint {call.name!r}: responseTimeMs is not a finite number"
        if call.response_time_ms > REAL_MAX:  # the recorder could not store it either
            return f"endpoint {call.name!r}: responseTimeMs is out of range"
    return None


@dataclass(frozen=True)
class ServiceState:
    """The aggregator's last known status of a service."""

    last_status: CheckStatus | None = None
    last_check_id: UUID | None = None
    last_started_at: datetime | None = None


@dataclass(frozen=True)
class Transition:
    """A status change decided by one check (see `quorum`)."""

    service_id: str
    from_status: CheckStatus | None
    to_status: CheckStatus
    at: datetime
    check_id: UUID
    regions: dict[str, CheckStatus] | None = None  # the regions that voted, when several


def sla_window(today: date, days: int) -> tuple[date, date]:
    """The rolling SLA window: the last `days` UTC days, today included."""
    return today - timedelta(days=days - 1), today


def sla_flip(breached: bool, uptime: float | None, target: float) -> bool | None:
    """The new breached flag when the window's uptime crosses the target, else None."""
    if uptime is None:
        return None
    now_breached = uptime < target
    return now_breached if now_breached != breached else None
