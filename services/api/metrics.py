"""Pure math from rollup rows to API answers: windows, uptime, percentiles, SLA, budget.

No I/O. Counts are over endpoint calls ("requests"); response times only over the calls
that got a response (`timed_requests`), so a timeout never pulls an average down.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from services.api.schemas import (
    BREACH_DAYS,
    AccountingPolicy,
    ErrorBudget,
    Period,
    ServiceMetrics,
    SlaReport,
    TrendPoint,
    UptimeDay,
)
from shared import histogram
from shared.events import ERROR_TYPES
from shared.rules import DayStatus, uptime_percent

PERCENT_DIGITS = 3
MS_DIGITS = 1
QUANTILES = (0.5, 0.9, 0.95, 0.99)
BREACH_STATUSES = frozenset(BREACH_DAYS)


@dataclass(frozen=True)
class Rollup:
    """One row of api_call_logs or api_call_logs_hourly (or the sum of several)."""

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
    errors: Mapping[str, int] = field(default_factory=dict)
    latency_hist: Mapping[str, int] = field(default_factory=dict)
    # The histogram bucket of each of QUANTILES, when the store found them (in SQL) instead
    # of shipping the histogram; None for a quantile of an empty histogram.
    quantile_buckets: tuple[int | None, ...] | None = None


@dataclass(frozen=True)
class DayRecord:
    """One row of uptime_records."""

    day: date
    status: DayStatus
    uptime: float | None


def pct(value: float | None) -> float | None:
    """A percentage as the API shows it."""
    return None if value is None else round(value, PERCENT_DIGITS)


def ms(value: float | None) -> float | None:
    """A duration in ms as the API shows it."""
    return None if value is None else round(value, MS_DIGITS)


def day_window(today: date, days: int) -> Period:
    """The last `days` UTC days including today."""
    return Period(days=days, start=today - timedelta(days=days - 1), end=today)


def month_window(first: date) -> Period:
    """The whole calendar month starting on `first` (a first of the month), UTC days."""
    following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    last = following - timedelta(days=1)
    return Period(days=last.day, start=first, end=last, month=first.strftime("%Y-%m"))


def days_of(period: Period) -> list[date]:
    """Every day of a window, oldest first."""
    return [period.start + timedelta(days=i) for i in range((period.end - period.start).days + 1)]


def hour_window(now: datetime, hours: int) -> list[datetime]:
    """The starts of the last `hours` UTC hours including the current one, oldest first."""
    current = now.replace(minute=0, second=0, microsecond=0)
    return [current - timedelta(hours=hours - 1 - i) for i in range(hours)]


def midnight(day: date) -> datetime:
    """00:00 UTC of a day."""
    return datetime.combine(day, time(), tzinfo=UTC)


def _min(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _max(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def combine(rows: Iterable[Rollup]) -> Rollup:
    """The sum of several rollups: counts add, min/max combine, histograms merge."""
    rows = list(rows)
    if len(rows) == 1:  # as it is, with the percentile buckets a store may have found
        return rows[0]
    errors: dict[str, int] = {}
    for row in rows:
        for kind, count in row.errors.items():
            errors[kind] = errors.get(kind, 0) + int(count)
    return Rollup(
        total_checks=sum(r.total_checks for r in rows),
        up_checks=sum(r.up_checks for r in rows),
        degraded_checks=sum(r.degraded_checks for r in rows),
        down_checks=sum(r.down_checks for r in rows),
        total_requests=sum(r.total_requests for r in rows),
        successful_requests=sum(r.successful_requests for r in rows),
        failed_requests=sum(r.failed_requests for r in rows),
        within_threshold=sum(r.within_threshold for r in rows),
        timed_requests=sum(r.timed_requests for r in rows),
        sum_response_time_ms=sum(r.sum_response_time_ms for r in rows),
        min_response_time_ms=_min(r.min_response_time_ms for r in rows),
        max_response_time_ms=_max(r.max_response_time_ms for r in rows),
        errors=errors,
        latency_hist=histogram.merge(r.latency_hist for r in rows),
    )


def average_ms(rollup: Rollup) -> float | None:
    """Mean response time over the calls that got a response."""
    if rollup.timed_requests <= 0:
        return None
    return rollup.sum_response_time_ms / rollup.timed_requests


def quantile_buckets(
    buckets: Sequence[int], counts: Sequence[int], qs: Sequence[float]
) -> tuple[int | None, ...]:
    """The bucket of each quantile (ascending) of a histogram given as sorted buckets and
    their positive counts, by histogram.quantiles' rank rule, in one pass."""
    total = sum(counts)
    if total <= 0:
        return (None,) * len(qs)
    ranks = [q * (total - 1) for q in qs]
    out: list[int | None] = []
    seen = 0
    for bucket, count in zip(buckets, counts, strict=True):
        seen += count
        while len(out) < len(ranks) and seen > ranks[len(out)]:
            out.append(bucket)
        if len(out) == len(ranks):
            break
    out += [buckets[-1]] * (len(ranks) - len(out))
    return tuple(out)


def percentiles(rollup: Rollup) -> list[float | None]:
    """p50, p90, p95, p99 from the merged histogram, clamped to the exact min/max."""
    if rollup.quantile_buckets is not None:
        lo, hi = rollup.min_response_time_ms, rollup.max_response_time_ms
        out: list[float | None] = []
        for bucket in rollup.quantile_buckets:
            value = None if bucket is None else histogram.bucket_value(bucket)
            if value is not None and lo is not None:
                value = max(value, lo)
            if value is not None and hi is not None:
                value = min(value, hi)
            out.append(value)
        return out
    return histogram.quantiles(
        rollup.latency_hist,
        QUANTILES,
        lo=rollup.min_response_time_ms,
        hi=rollup.max_response_time_ms,
    )


def share(part: int, total: int) -> float | None:
    """100 * part / total; None without data."""
    return None if total <= 0 else 100.0 * part / total


def error_rate(rollup: Rollup) -> float | None:
    """100 * failed / total requests; None without data."""
    return share(rollup.failed_requests, rollup.total_requests)


def errors_by_type(rollup: Rollup) -> dict[str, int]:
    """Every known error type (0 when absent), plus any unknown type the data holds."""
    out = dict.fromkeys(ERROR_TYPES, 0)
    for kind, count in rollup.errors.items():
        out[kind] = out.get(kind, 0) + int(count)
    return out


def service_metrics(
    service_id: str, period: Period, rows: Iterable[Rollup], computed_at: datetime
) -> ServiceMetrics:
    """The /api/metrics answer for one service from its daily rollups in the window."""
    total = combine(rows)
    p50, p90, p95, p99 = percentiles(total)
    return ServiceMetrics(
        service_id=service_id,
        period=period,
        uptime=pct(uptime_percent(total.successful_requests, total.total_requests)),
        avg_response_time=ms(average_ms(total)),
        min_response_time=ms(total.min_response_time_ms),
        max_response_time=ms(total.max_response_time_ms),
        total_requests=total.total_requests,
        successful_requests=total.successful_requests,
        failed_requests=total.failed_requests,
        degraded_checks=total.degraded_checks,
        total_checks=total.total_checks,
        p50_response_time=ms(p50),
        p90_response_time=ms(p90),
        p95_response_time=ms(p95),
        p99_response_time=ms(p99),
        error_rate=pct(error_rate(total)),
        errors_by_type=errors_by_type(total),
        computed_at=computed_at,
    )


def error_budget(
    total: Rollup, sla_target: float, *, days: int, interval_seconds: float
) -> ErrorBudget:
    """The target's allowance over the window in requests, checks and minutes, used and left.

    Minutes: the window allows days * 1440 * (100 - target) / 100; each down check counts
    one check interval of downtime.
    """
    spare = (100.0 - sla_target) / 100.0
    allowed = total.total_requests * spare
    remaining = allowed - total.failed_requests
    if total.total_requests <= 0:
        remaining_percent = None
    elif allowed > 0:
        remaining_percent = 100.0 * remaining / allowed
    else:  # a 100 % target allows nothing: the budget is either untouched or gone
        remaining_percent = 100.0 if total.failed_requests == 0 else 0.0
    allowed_checks = total.total_checks * spare
    allowed_minutes = days * 1440 * spare
    used_minutes = total.down_checks * interval_seconds / 60.0
    return ErrorBudget(
        allowed_failures=round(allowed, PERCENT_DIGITS),
        used_failures=total.failed_requests,
        remaining_failures=round(remaining, PERCENT_DIGITS),
        remaining_percent=pct(remaining_percent),
        allowed_failed_checks=round(allowed_checks, PERCENT_DIGITS),
        used_failed_checks=total.down_checks,
        remaining_failed_checks=round(allowed_checks - total.down_checks, PERCENT_DIGITS),
        check_interval_seconds=interval_seconds,
        allowed_downtime_minutes=round(allowed_minutes, PERCENT_DIGITS),
        used_downtime_minutes=round(used_minutes, PERCENT_DIGITS),
        remaining_downtime_minutes=round(allowed_minutes - used_minutes, PERCENT_DIGITS),
    )


def breaches(records: Iterable[DayRecord]) -> int:
    """Days whose status says uptime fell below the target (po or mo)."""
    return sum(1 for r in records if r.status in BREACH_STATUSES)


def sla_report(
    service_id: str,
    sla_target: float,
    period: Period,
    rows: Iterable[Rollup],
    records: Iterable[DayRecord],
    computed_at: datetime,
    *,
    interval_seconds: float,
    major_outage_below: float,
) -> SlaReport:
    """The /api/sla answer: uptime against the target, bad days, latency SLA, error budget."""
    total = combine(rows)
    current = uptime_percent(total.successful_requests, total.total_requests)
    in_window = [r for r in records if period.start <= r.day <= period.end]
    return SlaReport(
        service_id=service_id,
        sla_target=sla_target,
        current_sla=pct(current),
        breaches=breaches(in_window),
        response_time_sla=pct(share(total.within_threshold, total.total_requests)),
        # Decided on the unrounded figure, so 99.8996 never reads as meeting 99.9.
        is_breached=current is not None and current < sla_target,
        error_budget=error_budget(
            total, sla_target, days=period.days, interval_seconds=interval_seconds
        ),
        accounting=AccountingPolicy(major_outage_below=major_outage_below),
        period=period,
        computed_at=computed_at,
    )


def trend_points(starts: Sequence[datetime], rows: Mapping[datetime, Rollup]) -> list[TrendPoint]:
    """One point per bucket start (hour or day); a bucket without a row has 0 requests."""
    points = []
    for start in starts:
        row = rows.get(start)
        if row is None or row.total_requests == 0:
            points.append(
                TrendPoint(
                    start=start,
                    hour=start,
                    requests=0,
                    uptime=None,
                    error_rate=None,
                    avg_response_time=None,
                    p95_response_time=None,
                    p99_response_time=None,
                )
            )
            continue
        p95, p99 = histogram.quantiles(
            row.latency_hist,
            [0.95, 0.99],
            lo=row.min_response_time_ms,
            hi=row.max_response_time_ms,
        )
        points.append(
            TrendPoint(
                start=start,
                hour=start,
                requests=row.total_requests,
                uptime=pct(uptime_percent(row.successful_requests, row.total_requests)),
                error_rate=pct(error_rate(row)),
                avg_response_time=ms(average_ms(row)),
                p95_response_time=ms(p95),
                p99_response_time=ms(p99),
            )
        )
    return points


def uptime_days(period: Period, records: Mapping[date, DayRecord]) -> list[UptimeDay]:
    """Every day of the window, oldest first; a day without a record is `nd`."""
    out = []
    for day in days_of(period):
        record = records.get(day)
        if record is None:
            out.append(UptimeDay(date=day, status="nd", uptime=None))
        else:
            out.append(UptimeDay(date=day, status=record.status, uptime=pct(record.uptime)))
    return out
