"""The shared contracts: wire format, histogram accuracy, day-status rule, settings errors."""

from __future__ import annotations

import json
import math
import random

import pytest

from shared import histogram
from shared.events import CheckCompleted, StatusChanged
from shared.rules import day_status, uptime_percent
from shared.settings import Settings, load_settings
from tests.factories import make_check_completed


def test_check_completed_is_camel_case_and_round_trips() -> None:
    check = make_check_completed()
    wire = json.loads(check.to_wire())
    assert {"schemaVersion", "checkId", "serviceId", "startedAt", "durationMs"} <= wire.keys()
    assert wire["endpoints"][0]["responseTimeMs"] == 12.5
    assert CheckCompleted.model_validate_json(check.to_wire()) == check


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    wire = json.loads(make_check_completed().to_wire())
    wire["someFutureField"] = {"x": 1}
    assert CheckCompleted.model_validate(wire).service_id == "svc-a"


def test_status_changed_uses_from_and_to_on_the_wire() -> None:
    check = make_check_completed()
    event = StatusChanged(
        service_id="a",
        from_status="up",
        to_status="down",
        at=check.started_at,
        check_id=check.check_id,
    )
    wire = json.loads(event.to_wire())
    assert wire["from"] == "up" and wire["to"] == "down"


def test_naive_timestamps_are_refused() -> None:
    wire = json.loads(make_check_completed().to_wire())
    wire["startedAt"] = "2026-01-01T00:00:00"
    with pytest.raises(ValueError, match="timezone"):
        CheckCompleted.model_validate(wire)


def _exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[round(q * (len(ordered) - 1))]


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
def test_histogram_quantiles_within_two_percent_on_skewed_data(q: float) -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(4, 1.2) for _ in range(20_000)] + [0.4] * 500 + [9000.0] * 50
    parts: list[dict[str, int]] = [{}, {}, {}]
    for i, v in enumerate(values):
        histogram.add(parts[i % 3], v)
    merged = histogram.merge(parts)
    (estimate,) = histogram.quantiles(merged, [q], lo=min(values), hi=max(values))
    exact = _exact_quantile(values, q)
    assert estimate is not None
    assert math.isclose(estimate, exact, rel_tol=0.02), (estimate, exact)


def test_histogram_empty_and_single_value() -> None:
    assert histogram.quantiles({}, [0.5]) == [None]
    h: dict[str, int] = {}
    histogram.add(h, 250.0)
    (p50,) = histogram.quantiles(h, [0.5], lo=250.0, hi=250.0)
    assert p50 == 250.0


@pytest.mark.parametrize(
    ("ok", "total", "status"),
    [
        (0, 0, "nd"),
        (1000, 1000, "o"),
        (999, 1000, "o"),
        (998, 1000, "po"),
        (950, 1000, "po"),
        (949, 1000, "mo"),
        (0, 10, "mo"),
    ],
)
def test_day_status_rule(ok: int, total: int, status: str) -> None:
    assert day_status(ok, total, sla_target=99.9, major_outage_below=95.0) == status


def test_uptime_percent() -> None:
    assert uptime_percent(0, 0) is None
    assert uptime_percent(8571, 8640) == pytest.approx(99.2013, abs=1e-4)


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLA_TARGET", "abc")
    with pytest.raises(SystemExit, match="SLA_TARGET='abc'"):
        load_settings("api")


def test_retention_must_outlive_the_stream() -> None:
    with pytest.raises(ValueError, match="RETENTION_DAYS"):
        Settings(retention_days=3, checks_max_age_days=7)
