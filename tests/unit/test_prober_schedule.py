"""The schedule, on a fake clock: jittered start, fixed rate without drift, no overlap, a bound."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from services.prober.catalog import Service
from services.prober.schedule import LoopClock, Scheduler, wall_phase

EPOCH = 1_000_000.0


class FakeTimer:
    def __init__(self, callback: Callable[..., object], args: tuple[object, ...]) -> None:
        self.callback, self.args, self.cancelled = callback, args, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Time moves only when the test advances it; timers and sleepers fire in deadline order."""

    def __init__(self) -> None:
        self.t = EPOCH
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.t

    def call_at(self, deadline: float, callback: Callable[..., object], *args: object) -> FakeTimer:
        timer = FakeTimer(callback, args)
        heapq.heappush(self._timers, (deadline, next(self._order), timer))
        return timer

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self.t:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.call_at(deadline, lambda: future.done() or future.set_result(None))
        await future

    def wall(self, instant: float) -> datetime:
        return datetime.fromtimestamp(instant, UTC)

    async def advance(self, seconds: float, *, step: float) -> None:
        """Move time forward in coarse steps, so every wake-up is late by up to `step`."""
        end = self.t + seconds
        while self.t < end:
            self.t = min(end, self.t + step)
            while self._timers and self._timers[0][0] <= self.t:
                _, _, timer = heapq.heappop(self._timers)
                if not timer.cancelled:
                    timer.callback(*timer.args)
            for _ in range(20):  # let woken tasks run
                await asyncio.sleep(0)


class NoJitter(random.Random):
    """Every service due at the same instant."""

    def uniform(self, a: float, b: float) -> float:
        return a


def svc(service_id: str, interval: float) -> Service:
    return Service(
        id=service_id,
        name=service_id,
        description="",
        interval_seconds=interval,
        timeout_seconds=1.0,
        sla_target=99.9,
        endpoints=(),
    )


async def test_fixed_rate_does_not_drift_when_wakeups_are_late() -> None:
    clock = FakeClock()
    runs: list[tuple[datetime, float]] = []

    async def run_check(_: Service, due: datetime, lateness: float) -> None:
        runs.append((due, lateness))

    scheduler = Scheduler(
        [svc("a", 1.0)],
        run_check=run_check,
        semaphore=asyncio.Semaphore(10),
        clock=clock,
        rng=random.Random(7),
    )
    scheduler.start()
    await clock.advance(100.0, step=0.37)
    await scheduler.stop(grace=1)

    first = runs[0][0].timestamp() - EPOCH
    assert 0 <= first < 1.0  # the jitter stays within one interval
    # A schedule computed from "now" would lose ~0.2 s per turn and run ~80 times.
    assert len(runs) == int(100 - first) + 1
    for k, (due, lateness) in enumerate(runs):
        assert due.timestamp() - EPOCH == pytest.approx(first + k, abs=1e-6)
        assert 0 <= lateness <= 0.37 + 1e-9
    assert scheduler.skipped == 0


async def test_jitter_spreads_first_runs_within_the_interval() -> None:
    clock = FakeClock()
    firsts: dict[str, float] = {}

    async def run_check(service: Service, due: datetime, _: float) -> None:
        firsts.setdefault(service.id, due.timestamp() - EPOCH)

    services = [svc(f"s{i}", 10.0) for i in range(20)]
    scheduler = Scheduler(
        services,
        run_check=run_check,
        semaphore=asyncio.Semaphore(100),
        clock=clock,
        rng=random.Random(1),
    )
    scheduler.start()
    await clock.advance(10.0, step=0.01)
    await scheduler.stop(grace=1)
    assert len(firsts) == 20
    assert all(0 <= f < 10 for f in firsts.values())
    assert max(firsts.values()) - min(firsts.values()) > 5  # not all at once


async def test_a_check_never_overlaps_itself_and_skips_are_counted() -> None:
    clock = FakeClock()
    running = 0
    most = 0
    started: list[datetime] = []
    skips: list[int] = []

    async def run_check(_: Service, due: datetime, __: float) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        started.append(due)
        await clock.sleep_until(clock.now() + 2.5)  # takes 2.5 intervals
        running -= 1

    scheduler = Scheduler(
        [svc("slow", 1.0)],
        run_check=run_check,
        semaphore=asyncio.Semaphore(10),
        on_skip=lambda _, n: skips.append(n),
        clock=clock,
        rng=random.Random(3),
    )
    scheduler.start()
    await clock.advance(30.0, step=0.05)
    await scheduler.stop(grace=0)
    assert most == 1
    # Every run covers 3 turns (2.5 s, next turn free at +3): 1 runs, 2 skipped.
    assert scheduler.skipped == sum(skips) == pytest.approx(2 * len(started), abs=2)
    gaps = {round((b - a).total_seconds(), 6) for a, b in itertools.pairwise(started)}
    assert gaps == {3.0}


async def test_global_concurrency_is_bounded() -> None:
    clock = FakeClock()
    running = 0
    most = 0
    done = 0

    async def run_check(_: Service, __: datetime, ___: float) -> None:
        nonlocal running, most, done
        running += 1
        most = max(most, running)
        await clock.sleep_until(clock.now() + 0.5)
        running -= 1
        done += 1

    scheduler = Scheduler(
        [svc(f"s{i}", 5.0) for i in range(12)],
        run_check=run_check,
        semaphore=asyncio.Semaphore(3),
        clock=clock,
        rng=NoJitter(),
    )
    scheduler.start()
    await clock.advance(2.9, step=0.05)  # all 12 due at once: 4 waves of 3, 0.5 s each
    await scheduler.stop(grace=0)
    assert most == 3
    assert done == 12


async def test_update_adds_removes_and_reschedules_without_a_restart() -> None:
    clock = FakeClock()
    runs: list[tuple[str, float]] = []

    async def run_check(service: Service, due: datetime, _: float) -> None:
        runs.append((service.id, due.timestamp() - EPOCH))

    scheduler = Scheduler(
        [svc("keep", 1.0), svc("gone", 1.0), svc("faster", 2.0)],
        run_check=run_check,
        semaphore=asyncio.Semaphore(10),
        clock=clock,
        rng=random.Random(5),
    )
    scheduler.start()
    await clock.advance(4.0, step=0.01)
    keep_before = [t for s, t in runs if s == "keep"]
    added, removed, changed = scheduler.update(
        [svc("keep", 1.0), svc("faster", 0.5), svc("new", 1.0)]
    )
    assert (added, removed, changed) == (["new"], ["gone"], ["faster"])
    cut = len(runs)
    await clock.advance(4.0, step=0.01)
    await scheduler.stop(grace=1)
    after = runs[cut:]
    assert not [t for s, t in after if s == "gone"]
    assert 7 <= len([t for s, t in after if s == "faster"]) <= 9  # every 0.5 s now
    assert 3 <= len([t for s, t in after if s == "new"]) <= 4
    # An unchanged service keeps its rhythm across the update: no extra, no missed turn.
    keep = keep_before + [t for s, t in after if s == "keep"]
    assert all(b - a == pytest.approx(1.0) for a, b in itertools.pairwise(keep))
    assert scheduler.scheduled == 0


async def test_wall_phase_makes_replicas_agree_on_due_times() -> None:
    """Two schedulers started at different times run a service at the same instants."""
    dues: dict[str, list[float]] = {"early": [], "late": []}

    def recorder(name: str) -> Callable[[Service, datetime, float], Awaitable[None]]:
        async def run_check(_: Service, due: datetime, __: float) -> None:
            dues[name].append(round(due.timestamp(), 6))

        return run_check

    clock = FakeClock()
    service = svc("shared", 10.0)
    early = Scheduler(
        [service],
        run_check=recorder("early"),
        semaphore=asyncio.Semaphore(2),
        clock=clock,
        phase=wall_phase,
    )
    early.start()
    await clock.advance(13.7, step=0.05)
    late = Scheduler(
        [service],
        run_check=recorder("late"),
        semaphore=asyncio.Semaphore(2),
        clock=clock,
        phase=wall_phase,
    )
    late.start()
    await clock.advance(30.0, step=0.05)
    await early.stop(grace=0)
    await late.stop(grace=0)
    assert len(dues["late"]) == 3
    assert set(dues["late"]) <= set(dues["early"])
    phase = wall_phase(service)
    offsets = [(d - phase) % 10.0 for d in dues["early"]]
    assert all(min(o, 10.0 - o) < 1e-5 for o in offsets)
    assert 0 <= phase < 10.0 and wall_phase(service) == phase


async def test_a_hand_over_at_an_agreed_instant_runs_every_turn_once() -> None:
    """Half the services move from `old` to `new` at instant T. Each learns of it a little
    off (old while a turn due just before T is still pending, new after turns due since T):
    every turn before T is old's, every turn from T on is new's, none twice, none missed."""
    runs: dict[str, list[tuple[str, float]]] = {"old": [], "new": []}

    def recorder(name: str) -> Callable[[Service, datetime, float], Awaitable[None]]:
        async def run_check(service: Service, due: datetime, _: float) -> None:
            runs[name].append((service.id, round(due.timestamp(), 6)))

        return run_check

    clock = FakeClock()
    services = [svc(f"s{i:03d}", 1.0) for i in range(200)]
    moved, kept = services[1::2], services[0::2]
    old, new = (
        Scheduler(
            start_with,
            run_check=recorder(name),
            semaphore=asyncio.Semaphore(500),
            clock=clock,
            phase=wall_phase,
        )
        for name, start_with in (("old", services), ("new", []))
    )
    old.start()
    new.start()
    await clock.advance(3.0, step=0.01)
    handover = clock.t + 0.5
    await clock.advance(0.496, step=0.01)  # old hears of it 4 ms early...
    assert any(handover - 0.004 < old._due[s.id] < handover for s in moved)  # a turn pending
    old.update(kept, since=handover)
    await clock.advance(0.034, step=0.01)  # ...new 30 ms late, after some of its turns
    assert any(handover <= handover + (wall_phase(s) - handover) % 1.0 < clock.t for s in moved)
    new.update(moved, since=handover)
    await clock.advance(3.0, step=0.01)
    await old.stop(grace=0)
    await new.stop(grace=0)

    by_service: dict[str, list[tuple[float, str]]] = {}
    for name, done in runs.items():
        for service_id, due in done:
            by_service.setdefault(service_id, []).append((due, name))
    for s in services:
        turns = sorted(by_service[s.id])
        dues = [due for due, _ in turns]
        assert all(b - a == pytest.approx(1.0) for a, b in itertools.pairwise(dues)), (s.id, turns)
        assert dues[0] < EPOCH + 1.0 and dues[-1] > handover + 2.0
        owners = {name for due, name in turns if due >= handover}
        assert owners == ({"new"} if s in moved else {"old"}), (s.id, turns)
    assert old.scheduled == new.scheduled == 0


async def test_the_loop_clock_starts_turns_on_its_tick_grid_never_early() -> None:
    clock = LoopClock(tick=0.01)
    now = clock.now()
    deadlines = [now + 0.5 + k * 0.0037 for k in range(10)]
    handles = [clock.call_at(d, lambda: None) for d in deadlines]
    try:
        for deadline, handle in zip(deadlines, handles, strict=True):
            when = handle.when()  # type: ignore[attr-defined]
            assert deadline <= when < deadline + 0.01
            assert abs(when / 0.01 - round(when / 0.01)) < 1e-6
        # turns due within one tick share its instant: one wake-up of the loop starts them
        assert len({round(h.when(), 9) for h in handles}) <= 5  # type: ignore[attr-defined]
    finally:
        for handle in handles:
            handle.cancel()
    exact = LoopClock(tick=0)
    handle = exact.call_at(now + 0.5, lambda: None)
    assert handle.when() == now + 0.5  # type: ignore[attr-defined]
    handle.cancel()
