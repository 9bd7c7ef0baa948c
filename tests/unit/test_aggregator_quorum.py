"""The status quorum across regions (OpenStatus-style), on hand-made checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.aggregator import quorum
from services.aggregator.rollups import ServiceState
from shared.events import CheckCompleted
from tests.factories import make_check_completed

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
STALE = timedelta(seconds=60)  # two 30 s intervals


def _check(region: str, status: str, second: float) -> CheckCompleted:
    return make_check_completed(
        region=region, status=status, started_at=T0 + timedelta(seconds=second)
    )


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], None),
        (["up"], "up"),
        (["down"], "down"),
        (["degraded"], "degraded"),
        (["down", "up"], "down"),  # half is enough
        (["down", "up", "up"], "up"),  # one region of three is not
        (["down", "down", "up"], "down"),
        (["degraded", "up", "up"], "up"),
        (["degraded", "down", "up"], "degraded"),  # two of three not up, one down
        (["down", "down", "up", "up"], "down"),
        (["down", "up", "up", "up"], "up"),
    ],
)
def test_verdict_is_down_only_when_at_least_half_see_it_down(
    statuses: list[str], expected: str | None
) -> None:
    assert quorum.verdict(statuses) == expected  # type: ignore[arg-type]


def test_one_region_failing_alone_moves_nothing_until_half_agree() -> None:
    rounds = [
        # (second, eu, us, ap): every region checks at the same due times
        (0, "up", "up", "up"),
        (30, "down", "up", "up"),  # eu's network trouble: 1 of 3
        (60, "down", "down", "up"),  # now 2 of 3: down
        (90, "up", "down", "up"),  # 1 of 3: up again
    ]
    checks = [
        _check(region, status, second)
        for second, *statuses in rounds
        for region, status in zip(("eu", "us", "ap"), statuses, strict=True)
    ]
    state, regions, moves = quorum.decide(ServiceState(), {}, checks, stale_after=STALE)
    assert [(m.from_status, m.to_status, m.at) for m in moves] == [
        (None, "up", T0),
        ("up", "down", T0 + timedelta(seconds=60)),
        ("down", "up", T0 + timedelta(seconds=90)),
    ]
    assert moves[1].regions == {"ap": "up", "eu": "down", "us": "down"}
    assert state.last_status == "up"
    assert {r: s.status for r, s in regions.items()} == {"eu": "up", "us": "down", "ap": "up"}


def test_the_same_checks_in_any_arrival_order_give_the_same_moves() -> None:
    checks = [
        _check("eu", "up", 0),
        _check("us", "up", 1),
        _check("eu", "down", 30),
        _check("us", "down", 31),
        _check("eu", "down", 60),
        _check("us", "up", 61),
    ]
    expected = [(None, "up"), ("up", "down")]  # a 2-region split counts as down
    for order in (checks, list(reversed(checks))):
        _, _, moves = quorum.decide(ServiceState(), {}, order, stale_after=STALE)
        assert [(m.from_status, m.to_status) for m in moves] == expected
    # Arriving batch by batch (the state carried over) decides the same.
    state, regions, seen = ServiceState(), {}, []
    for check in checks:
        state, regions, moves = quorum.decide(state, regions, [check], stale_after=STALE)
        seen += [(m.from_status, m.to_status) for m in moves]
    assert seen == expected


def test_a_region_that_went_silent_stops_voting() -> None:
    checks = [_check("eu", "down", 0), _check("us", "up", 0)]
    state, regions, _ = quorum.decide(ServiceState(), {}, checks, stale_after=STALE)
    assert state.last_status == "down"  # 1 of 2
    # eu's prober is gone; us keeps reporting up. Within two intervals eu still votes,
    # after that the service is up on us's word alone.
    state, regions, moves = quorum.decide(
        state, regions, [_check("us", "up", 30)], stale_after=STALE
    )
    assert moves == [] and state.last_status == "down"
    state, regions, moves = quorum.decide(
        state, regions, [_check("us", "up", 61)], stale_after=STALE
    )
    assert [(m.from_status, m.to_status, m.regions) for m in moves] == [
        ("down", "up", {"us": "up"})
    ]


def test_a_redelivered_or_older_check_changes_nothing() -> None:
    first = _check("eu", "down", 30)
    state, regions, _ = quorum.decide(ServiceState(), {}, [first], stale_after=STALE)
    again, regions_again, moves = quorum.decide(
        state, regions, [first, _check("eu", "up", 0)], stale_after=STALE
    )
    assert (again, regions_again, moves) == (state, regions, [])


def test_one_region_key_is_every_check_moving_the_status() -> None:
    checks = [_check("eu", "up", 0), _check("us", "down", 1), _check("eu", "up", 2)]
    _, _, moves = quorum.decide(
        ServiceState(),
        {},
        checks,
        stale_after=STALE,
        region_of=lambda c: quorum.ONE_REGION,
    )
    assert [(m.from_status, m.to_status, m.regions) for m in moves] == [
        (None, "up", None),
        ("up", "down", None),
        ("down", "up", None),
    ]
