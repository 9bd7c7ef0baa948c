"""A service's status across regions: down only when at least half the regions see it down.

Probers in different regions each check every service. Each region's latest check is kept;
the service's status is the quorum of the regions heard from recently (within two intervals
of the newest check, so a region whose prober is gone stops counting instead of holding the
status). With one region this is simply the latest check's status. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from services.aggregator.rollups import ServiceState, Transition
from shared.events import CheckCompleted, CheckStatus

ONE_REGION = ""  # the key every check shares when the quorum is off


@dataclass(frozen=True)
class RegionState:
    """A region's latest check of a service."""

    status: CheckStatus
    check_id: UUID
    started_at: datetime


def verdict(statuses: Iterable[CheckStatus]) -> CheckStatus | None:
    """`down` when at least half are down, `degraded` when at least half are not up, else `up`."""
    seen = list(statuses)
    if not seen:
        return None
    down = sum(s == "down" for s in seen)
    if 2 * down >= len(seen):
        return "down"
    if 2 * (down + sum(s == "degraded" for s in seen)) >= len(seen):
        return "degraded"
    return "up"


def counted(
    regions: Mapping[str, RegionState], *, at: datetime, stale_after: timedelta
) -> dict[str, RegionState]:
    """The regions whose latest check is recent enough to vote at `at`."""
    return {r: s for r, s in regions.items() if at - s.started_at <= stale_after}


def decide(
    state: ServiceState,
    regions: Mapping[str, RegionState],
    checks: Iterable[CheckCompleted],
    *,
    stale_after: timedelta,
    region_of: Callable[[CheckCompleted], str] = lambda c: c.region,
) -> tuple[ServiceState, dict[str, RegionState], list[Transition]]:
    """Walk a service's new checks in time order; return the new state, regions and moves.

    A check older than its region's latest changes nothing (redelivery, reordering).
    """
    regions = dict(regions)
    moves: list[Transition] = []
    for check in sorted(checks, key=lambda c: (c.started_at, str(c.check_id))):
        region = region_of(check)
        latest = regions.get(region)
        if latest is not None and check.started_at <= latest.started_at:
            continue
        regions[region] = RegionState(check.status, check.check_id, check.started_at)
        newest = check.started_at
        if state.last_started_at is not None and state.last_started_at > newest:
            newest = state.last_started_at
        voters = counted(regions, at=newest, stale_after=stale_after)
        status = verdict(s.status for s in voters.values())
        if status is None:
            continue
        if status != state.last_status:
            moves.append(
                Transition(
                    check.service_id,
                    state.last_status,
                    status,
                    check.started_at,
                    check.check_id,
                    {r: voters[r].status for r in sorted(voters)}
                    if set(voters) != {ONE_REGION}
                    else None,
                )
            )
        if newest == check.started_at:
            state = ServiceState(status, check.check_id, newest)
        else:  # a late region's check: the status may move, the latest check stays
            state = ServiceState(status, state.last_check_id, newest)
    return state, regions, moves
