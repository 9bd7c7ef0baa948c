"""The api's pure math against hand-computed numbers."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from services.api import metrics
from services.api.metrics import DayRecord, Rollup
from services.api.schemas import ErrorBudget
from shared import histogram

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
PERIOD = metrics.day_window(date(2026, 3, 10), 7)
SLA_KW: dict[str, float] = {"interval_seconds": 30.0, "major_outage_below": 95.0}

DAY1 = Rollup(
    total_checks=100,
    up_checks=97,
    degraded_checks=2,
    down_checks=1,
    total_requests=100,
    successful_requests=98,
    failed_requests=2,
    within_threshold=95,
    timed_requests=99,
    sum_response_time_ms=9900.0,
    min_response_time_ms=50.0,
    max_response_time_ms=300.0,
    errors={"timeout": 1, "http_status": 1},
)
DAY2 = Rollup(
    total_checks=50,
    up_checks=49,
    degraded_checks=1,
    down_checks=0,
    total_requests=50,
    successful_requests=50,
    failed_requests=0,
    within_threshold=50,
    timed_requests=50,
    sum_response_time_ms=2500.0,
    min_response_time_ms=20.0,
    max_response_time_ms=80.0,
    errors={},
)


def test_windows_are_whole_utc_days_and_hours_including_now() -> None:
    assert metrics.day_window(date(2026, 3, 10), 30).model_dump() == {
        "days": 30,
        "start": date(2026, 2, 9),
        "end": date(2026, 3, 10),
        "month": None,
    }
    one = metrics.day_window(date(2026, 3, 10), 1)
    assert one.start == one.end == date(2026, 3, 10)
    assert metrics.hour_window(NOW, 3) == [
        datetime(2026, 3, 10, 10, tzinfo=UTC),
        datetime(2026, 3, 10, 11, tzinfo=UTC),
        datetime(2026, 3, 10, 12, tzinfo=UTC),
    ]
    assert len(metrics.days_of(metrics.day_window(date(2026, 3, 1), 90))) == 90


def test_service_metrics_over_two_days() -> None:
    m = metrics.service_metrics("svc-a", PERIOD, [DAY1, DAY2], NOW)
    assert m.total_requests == 150
    assert m.successful_requests == 148
    assert m.failed_requests == 2
    assert m.total_checks == 150
    assert m.degraded_checks == 3
    assert m.uptime == 98.667  # 148 / 150 = 98.6666...
    assert m.error_rate == 1.333  # 2 / 150
    assert m.avg_response_time == 83.2  # (9900 + 2500) / (99 + 50) timed calls = 83.22
    assert m.min_response_time == 20.0
    assert m.max_response_time == 300.0
    assert m.errors_by_type == {
        "timeout": 1,
        "connection": 0,
        "dns": 0,
        "tls": 0,
        "http_status": 1,
        "assertion": 0,
        "other": 0,
    }
    assert m.stale is False and m.computed_at == NOW


def test_no_data_is_null_not_zero() -> None:
    m = metrics.service_metrics("svc-a", PERIOD, [], NOW)
    assert (m.uptime, m.error_rate, m.avg_response_time, m.p95_response_time) == (None,) * 4
    assert (m.total_requests, m.total_checks) == (0, 0)
    s = metrics.sla_report("svc-a", 99.9, PERIOD, [], [], NOW, **SLA_KW)
    assert s.current_sla is None and s.response_time_sla is None and s.is_breached is False
    assert s.error_budget.remaining_percent is None


def test_percentiles_from_a_histogram_of_known_values() -> None:
    hist: dict[str, int] = {}
    for v in range(1, 101):  # 1, 2, ..., 100 ms
        histogram.add(hist, float(v))
    day = Rollup(
        total_requests=100,
        successful_requests=100,
        timed_requests=100,
        sum_response_time_ms=5050.0,
        min_response_time_ms=1.0,
        max_response_time_ms=100.0,
        latency_hist=hist,
    )
    m = metrics.service_metrics("svc-a", PERIOD, [day], NOW)
    # numpy's default rank q*(n-1) picks the 50th, 90th, 95th and 99th values; the sketch
    # promises 1 % relative accuracy.
    for got, want in (
        (m.p50_response_time, 50),
        (m.p90_response_time, 90),
        (m.p95_response_time, 95),
        (m.p99_response_time, 99),
    ):
        assert got == pytest.approx(want, rel=0.011)
    assert m.avg_response_time == 50.5


def test_percentiles_merge_across_days_and_clamp_to_min_max() -> None:
    a: dict[str, int] = {}
    b: dict[str, int] = {}
    for _ in range(90):
        histogram.add(a, 10.0)
    for _ in range(10):
        histogram.add(b, 1000.0)
    rows = [
        Rollup(
            total_requests=90,
            successful_requests=90,
            timed_requests=90,
            sum_response_time_ms=900.0,
            min_response_time_ms=10.0,
            max_response_time_ms=10.0,
            latency_hist=a,
        ),
        Rollup(
            total_requests=10,
            successful_requests=10,
            timed_requests=10,
            sum_response_time_ms=10000.0,
            min_response_time_ms=1000.0,
            max_response_time_ms=1000.0,
            latency_hist=b,
        ),
    ]
    m = metrics.service_metrics("svc-a", PERIOD, rows, NOW)
    # 90 values of 10 ms then 10 of 1000 ms: p50 and p90 (rank 89.1) are 10 ms, p95 is 1000;
    # 1000 is the window's max, so the bucket's representative is clamped to it exactly.
    assert m.p50_response_time == pytest.approx(10.0, rel=0.01)
    assert m.p90_response_time == pytest.approx(10.0, rel=0.01)
    assert m.p95_response_time == 1000.0 and m.p99_response_time == 1000.0


def test_a_single_value_gives_exact_percentiles() -> None:
    hist: dict[str, int] = {}
    histogram.add(hist, 123.4)
    row = Rollup(
        total_requests=1,
        successful_requests=1,
        timed_requests=1,
        sum_response_time_ms=123.4,
        min_response_time_ms=123.4,
        max_response_time_ms=123.4,
        latency_hist=hist,
    )
    m = metrics.service_metrics("svc-a", PERIOD, [row], NOW)
    assert {m.p50_response_time, m.p99_response_time, m.avg_response_time} == {123.4}


def budget(
    requests: int, failed: int, target: float, checks: int = 0, down: int = 0, days: int = 30
) -> ErrorBudget:
    row = Rollup(
        total_requests=requests, failed_requests=failed, total_checks=checks, down_checks=down
    )
    return metrics.error_budget(row, target, days=days, interval_seconds=60.0)


def test_error_budget_in_requests() -> None:
    b = budget(10_000, 4, 99.9)
    assert (b.allowed_failures, b.used_failures, b.remaining_failures) == (10.0, 4, 6.0)
    assert b.remaining_percent == 60.0
    over = budget(10_000, 15, 99.9)
    assert (over.remaining_failures, over.remaining_percent) == (-5.0, -50.0)
    assert budget(100, 0, 100.0).remaining_percent == 100.0
    assert budget(100, 1, 100.0).remaining_percent == 0.0


def test_error_budget_in_checks_and_minutes() -> None:
    # 30 days at 99.9 %: 43.2 minutes allowed (the textbook figure); 5 down checks at a
    # 60 s interval used 5 minutes.
    b = budget(86_400, 7, 99.9, checks=43_200, down=5, days=30)
    assert b.allowed_downtime_minutes == 43.2
    assert b.used_downtime_minutes == 5.0
    assert b.remaining_downtime_minutes == 38.2
    assert b.check_interval_seconds == 60.0
    assert (b.allowed_failed_checks, b.used_failed_checks) == (43.2, 5)
    assert b.remaining_failed_checks == 38.2
    # a 31-day month at 99.5 %: 223.2 minutes
    month = budget(0, 0, 99.5, days=31)
    assert month.allowed_downtime_minutes == 223.2
    assert month.remaining_percent is None


def test_month_window_covers_the_whole_calendar_month() -> None:
    feb = metrics.month_window(date(2028, 2, 1))  # leap year
    assert (feb.start, feb.end, feb.days, feb.month) == (
        date(2028, 2, 1),
        date(2028, 2, 29),
        29,
        "2028-02",
    )
    dec = metrics.month_window(date(2026, 12, 1))
    assert (dec.start, dec.end, dec.days) == (date(2026, 12, 1), date(2026, 12, 31), 31)
    assert metrics.month_window(date(2026, 11, 1)).days == 30


def test_sla_report_carries_the_accounting_policy() -> None:
    s = metrics.sla_report("svc-a", 99.9, PERIOD, [], [], NOW, **SLA_KW)
    assert s.accounting.model_dump(by_alias=True) == {
        "uptimeBasis": "requests",
        "degraded": "up",
        "noData": "excluded",
        "dayBoundary": "UTC",
        "breachDays": ["po", "mo"],
        "downtimePerDownCheck": "checkInterval",
        "majorOutageBelow": 95.0,
    }
    assert s.error_budget.allowed_downtime_minutes == 10.08  # 7 days * 1440 * 0.1 %


def test_sla_report_counts_po_and_mo_days_in_the_window() -> None:
    records = [
        DayRecord(date(2026, 3, 4), "o", 100.0),
        DayRecord(date(2026, 3, 5), "po", 99.0),
        DayRecord(date(2026, 3, 6), "mo", 50.0),
        DayRecord(date(2026, 3, 7), "nd", None),
        DayRecord(date(2026, 3, 1), "mo", 10.0),  # before the window: not counted
    ]
    s = metrics.sla_report("svc-a", 99.0, PERIOD, [DAY1, DAY2], records, NOW, **SLA_KW)
    assert s.breaches == 2
    assert s.current_sla == 98.667
    assert s.is_breached is True
    assert s.response_time_sla == 96.667  # (95 + 50) / 150
    assert s.error_budget.allowed_failures == 1.5  # 150 * 1 %
    assert s.error_budget.used_failures == 2
    assert s.error_budget.remaining_failures == -0.5
    assert s.error_budget.remaining_percent == -33.333


def test_breach_is_decided_before_rounding() -> None:
    row = Rollup(total_requests=1_000_000, successful_requests=998_996, failed_requests=1004)
    s = metrics.sla_report("svc-a", 99.9, PERIOD, [row], [], NOW, **SLA_KW)
    assert s.current_sla == 99.9  # 99.8996 shown to 3 decimals
    assert s.is_breached is True
    exact = Rollup(total_requests=1000, successful_requests=999, failed_requests=1)
    assert (
        metrics.sla_report("svc-a", 99.9, PERIOD, [exact], [], NOW, **SLA_KW).is_breached is False
    )


def test_trend_has_one_point_per_hour_with_gaps_as_nulls() -> None:
    hours = metrics.hour_window(NOW, 3)
    hist: dict[str, int] = {}
    histogram.add(hist, 100.0, 19)
    histogram.add(hist, 400.0, 1)
    row = Rollup(
        total_requests=20,
        successful_requests=19,
        failed_requests=1,
        timed_requests=20,
        sum_response_time_ms=2300.0,
        min_response_time_ms=100.0,
        max_response_time_ms=400.0,
        latency_hist=hist,
    )
    points = metrics.trend_points(hours, {hours[1]: row})
    assert [p.hour for p in points] == hours and [p.start for p in points] == hours
    assert points[0].model_dump(exclude={"hour", "start"}) == {
        "requests": 0,
        "uptime": None,
        "error_rate": None,
        "avg_response_time": None,
        "p95_response_time": None,
        "p99_response_time": None,
    }
    assert points[1].requests == 20
    assert points[1].uptime == 95.0
    assert points[1].avg_response_time == 115.0
    # rank 0.95 * 19 = 18.05: the 19th value, 100 ms (within the sketch's 1 %)
    assert points[1].p95_response_time == pytest.approx(100.0, rel=0.01)
    # rank 0.99 * 19 = 18.81 is still within the 19 values of 100 ms
    assert points[1].p99_response_time == pytest.approx(100.0, rel=0.01)
    assert points[1].error_rate == 5.0
    assert points[2].requests == 0


def test_uptime_days_fill_missing_days_with_nd_oldest_first() -> None:
    period = metrics.day_window(date(2026, 3, 10), 4)
    records = {
        date(2026, 3, 8): DayRecord(date(2026, 3, 8), "po", 99.12345),
        date(2026, 3, 10): DayRecord(date(2026, 3, 10), "o", 100.0),
    }
    days = metrics.uptime_days(period, records)
    assert [(d.date.isoformat(), d.status, d.uptime) for d in days] == [
        ("2026-03-07", "nd", None),
        ("2026-03-08", "po", 99.123),
        ("2026-03-09", "nd", None),
        ("2026-03-10", "o", 100.0),
    ]


@pytest.mark.parametrize("seed", range(20))
def test_quantile_buckets_pick_the_buckets_histogram_quantiles_picks(seed: int) -> None:
    import random

    rng = random.Random(seed)
    hist: dict[str, int] = {}
    for _ in range(rng.choice([1, 2, 7, 100, 5000])):
        histogram.add(hist, rng.lognormvariate(4.4, 1.0), rng.choice([1, 1, 3]))
    ordered = sorted((int(k), c) for k, c in hist.items())
    buckets = metrics.quantile_buckets(
        [b for b, _ in ordered], [c for _, c in ordered], metrics.QUANTILES
    )
    # No clamping here, so every value is exactly a bucket's representative.
    want = histogram.quantiles(hist, metrics.QUANTILES)
    assert [histogram.bucket_value(b) for b in buckets if b is not None] == want
    lo, hi = 40.0, 150.0  # and the clamped figures agree too
    from_buckets = Rollup(
        min_response_time_ms=lo, max_response_time_ms=hi, quantile_buckets=buckets
    )
    from_hist = Rollup(min_response_time_ms=lo, max_response_time_ms=hi, latency_hist=hist)
    assert metrics.percentiles(from_buckets) == metrics.percentiles(from_hist)


def test_quantile_buckets_of_an_empty_histogram_are_none() -> None:
    assert metrics.quantile_buckets([], [], metrics.QUANTILES) == (None, None, None, None)
    assert metrics.percentiles(Rollup(quantile_buckets=(None,) * 4)) == [None] * 4
