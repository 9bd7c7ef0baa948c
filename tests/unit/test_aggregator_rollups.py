"""The aggregator's accounting on hand-made checks (no I/O)."""

from __future__ import annotations

import math
import random
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.aggregator import quorum, rollups
from services.aggregator.consumer import dlq_reason
from services.aggregator.outbox import event_type
from services.aggregator.quorum import RegionState
from services.aggregator.rollups import Counters, ServiceState
from shared import histogram
from shared.events import CheckCompleted
from tests.factories import make_check_completed, make_endpoint_result

T0 = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _mixed_check(started_at: datetime = T0) -> CheckCompleted:
    return make_check_completed(
        started_at=started_at,
        status="down",
        endpoints=[
            make_endpoint_result(response_time_ms=10.0, latency_threshold_ms=100.0),
            make_endpoint_result(response_time_ms=250.0, latency_threshold_ms=100.0),  # slow, ok
            make_endpoint_result(
                status_code=None, response_time_ms=5000.0, ok=False, error_type="timeout"
            ),
            make_endpoint_result(
                status_code=503, response_time_ms=40.0, ok=False, error_type="http_status"
            ),
        ],
    )


def test_one_check_counts_each_call() -> None:
    c = Counters()
    c.add_check(_mixed_check())
    assert (c.total_checks, c.up_checks, c.degraded_checks, c.down_checks) == (1, 0, 0, 1)
    assert (c.total_requests, c.successful_requests, c.failed_requests) == (4, 2, 2)
    assert c.within_threshold == 1  # the fast successful call only
    # The timeout got no response: it feeds neither the times nor the histogram.
    assert c.timed_requests == 3
    assert c.sum_response_time_ms == 300.0
    assert (c.min_response_time_ms, c.max_response_time_ms) == (10.0, 250.0)
    assert c.errors == {"timeout": 1, "http_status": 1}
    assert sum(c.latency_hist.values()) == 3


def test_failed_call_without_error_type_counts_as_other() -> None:
    c = Counters()
    c.add_check(make_check_completed(status="down", endpoints=[make_endpoint_result(ok=False)]))
    assert c.errors == {"other": 1}
    assert c.within_threshold == 0


def test_rollup_splits_by_utc_day_and_hour() -> None:
    checks = [
        _mixed_check(T0),  # 2026-03-01 23:30
        make_check_completed(started_at=T0 + timedelta(minutes=40)),  # 2026-03-02 00:10
        make_check_completed(started_at=T0 + timedelta(minutes=50), status="degraded"),
        make_check_completed(service_id="svc-b", started_at=T0),
    ]
    out = rollups.rollup(checks)
    assert set(out.daily) == {
        ("svc-a", date(2026, 3, 1)),
        ("svc-a", date(2026, 3, 2)),
        ("svc-b", date(2026, 3, 1)),
    }
    assert out.daily[("svc-a", date(2026, 3, 2))].total_checks == 2
    assert out.daily[("svc-a", date(2026, 3, 2))].degraded_checks == 1
    assert out.daily[("svc-a", date(2026, 3, 1))].total_requests == 4
    hour = datetime(2026, 3, 2, 0, tzinfo=UTC)
    assert out.hourly[("svc-a", hour)].total_requests == 2


def test_a_non_utc_timestamp_counts_on_its_utc_day() -> None:
    from datetime import timezone

    local = datetime(2026, 3, 2, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert rollups.day_of(local) == date(2026, 3, 1)
    assert rollups.hour_of(local) == datetime(2026, 3, 1, 23, tzinfo=UTC)


def test_merging_partial_rollups_equals_one_rollup() -> None:
    rnd = random.Random(7)
    checks = [
        make_check_completed(
            status="up",
            endpoints=[
                make_endpoint_result(
                    response_time_ms=rnd.uniform(1, 900),
                    ok=(ok := rnd.random() > 0.1),
                    error_type=None if ok else "connection",
                    status_code=200 if ok else None,
                )
            ],
        )
        for _ in range(200)
    ]
    whole = Counters()
    for check in checks:
        whole.add_check(check)
    first, second = Counters(), Counters()
    for check in checks[:77]:
        first.add_check(check)
    for check in checks[77:]:
        second.add_check(check)
    first.merge(second)
    assert first.latency_hist == whole.latency_hist
    assert first.errors == whole.errors
    assert first.min_response_time_ms == whole.min_response_time_ms
    assert first.max_response_time_ms == whole.max_response_time_ms
    assert first.sum_response_time_ms == pytest.approx(whole.sum_response_time_ms)
    assert (first.total_requests, first.failed_requests, first.timed_requests) == (
        whole.total_requests,
        whole.failed_requests,
        whole.timed_requests,
    )


def test_columns_are_sorted_by_key() -> None:
    out = rollups.rollup(
        [
            make_check_completed(service_id="b", started_at=T0),
            make_check_completed(service_id="a", started_at=T0 + timedelta(days=1)),
            make_check_completed(service_id="a", started_at=T0),
        ]
    )
    cols = rollups.columns(out.daily)
    assert list(zip(cols[0], cols[1], strict=True)) == [
        ("a", date(2026, 3, 1)),
        ("a", date(2026, 3, 2)),
        ("b", date(2026, 3, 1)),
    ]
    assert len(cols) == 16


def _exact_percentile(values: list[float], q: float) -> float:
    """numpy's default (linear) percentile, without numpy."""
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def test_histogram_percentiles_within_two_percent_on_a_skewed_list() -> None:
    rnd = random.Random(2026)
    # Mostly fast, a long slow tail: the shape latency really has.
    values = [rnd.lognormvariate(3.0, 0.6) for _ in range(9000)]
    values += [rnd.uniform(800, 9000) for _ in range(1000)]
    c = Counters()
    check_endpoints = [make_endpoint_result(response_time_ms=v) for v in values]
    for i in range(0, len(check_endpoints), 50):
        c.add_check(make_check_completed(endpoints=check_endpoints[i : i + 50]))
    qs = [0.5, 0.75, 0.85, 0.95, 0.99]  # not 0.9: the gap between bulk and tail
    estimates = histogram.quantiles(
        c.latency_hist, qs, c.min_response_time_ms, c.max_response_time_ms
    )
    for q, estimate in zip(qs, estimates, strict=True):
        exact = _exact_percentile(values, q)
        assert estimate is not None
        assert abs(estimate - exact) / exact < 0.02, (q, estimate, exact)


def _check(status: str, minute: int) -> CheckCompleted:
    return make_check_completed(status=status, started_at=T0 + timedelta(minutes=minute))


def test_transitions_count_each_change_once_including_the_first() -> None:
    checks = [
        _check("up", 0),
        _check("up", 1),
        _check("down", 2),
        _check("down", 3),
        _check("up", 4),
    ]
    state, _, moves = quorum.decide(
        ServiceState(), {}, reversed(checks), stale_after=HOUR
    )  # arrival order varies
    assert [(m.from_status, m.to_status) for m in moves] == [
        (None, "up"),
        ("up", "down"),
        ("down", "up"),
    ]
    assert [m.check_id for m in moves] == [
        checks[0].check_id,
        checks[2].check_id,
        checks[4].check_id,
    ]
    assert state.last_status == "up" and state.last_started_at == checks[4].started_at


def test_a_check_older_than_the_state_does_not_move_it() -> None:
    state = ServiceState("up", uuid.uuid4(), T0 + timedelta(minutes=10))
    regions = {"test": RegionState("up", state.last_check_id, state.last_started_at)}
    new_state, _, moves = quorum.decide(state, regions, [_check("down", 5)], stale_after=HOUR)
    assert moves == [] and new_state == state
    new_state, _, moves = quorum.decide(state, regions, [_check("down", 11)], stale_after=HOUR)
    assert [(m.from_status, m.to_status) for m in moves] == [("up", "down")]


def test_sla_flip_only_on_crossing() -> None:
    assert rollups.sla_flip(False, 99.0, 99.9) is True
    assert rollups.sla_flip(True, 99.0, 99.9) is None
    assert rollups.sla_flip(True, 99.9, 99.9) is False  # at the target is met
    assert rollups.sla_flip(False, 100.0, 99.9) is None
    assert rollups.sla_flip(False, None, 99.9) is None
    assert rollups.sla_window(date(2026, 3, 30), 30) == (date(2026, 3, 1), date(2026, 3, 30))


def test_non_finite_response_time_is_refused() -> None:
    check = make_check_completed(endpoints=[make_endpoint_result(response_time_ms=math.inf)])
    assert rollups.is_well_formed(check) is not None
    assert rollups.is_well_formed(make_check_completed()) is None


def test_dlq_reason_is_one_line_and_names_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        CheckCompleted.model_validate_json(b'{"checkId": "nope"}')
    reason = dlq_reason(info.value)
    assert "\n" not in reason and "checkId" in reason and len(reason) <= 500


def test_event_type_from_msg_id() -> None:
    assert event_type("status-123") == "StatusChanged"
    assert event_type("sla-breached-svc-1") == "SlaBreached"
    assert event_type("sla-recovered-svc-1") == "SlaRecovered"


def test_counters_have_the_shared_rollup_columns_in_table_order() -> None:
    from dataclasses import fields

    from shared.rollup_row import ROLLUP_COLUMNS

    assert tuple(f.name for f in fields(Counters)) == ROLLUP_COLUMNS


def test_counted_times_are_the_stored_real_values() -> None:
    # The raw tables keep `real`: the rollups add the same values, so a rebuild matches.
    c = Counters()
    c.add_check(make_check_completed(endpoints=[make_endpoint_result(response_time_ms=0.1)]))
    assert c.sum_response_time_ms == rollups.as_stored(0.1) != 0.1
    assert rollups.is_well_formed(
        make_check_completed(endpoints=[make_endpoint_result(response_time_ms=1e39)])
    )
