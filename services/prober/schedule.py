"""When checks run: per service a jittered start, then a fixed rate that never drifts.

Due times are `start + jitter + k * interval`, computed by addition, never from "now", so a
slow check or a busy event loop does not push later checks back. A check that is still
running when its next turn comes is skipped (and counted), never run twice at once. A global
semaphore bounds how many checks run at the same time.

With a `phase` function the jitter is not random but a fixed offset of the wall clock
(`wall_phase`: a hash of the service id), so every replica agrees on when a service is due
and a service handed from one replica to another keeps its rhythm (no double, no gap).
`update()` swaps the set of services while running (catalog reload, replica ownership).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from services.prober.catalog import Service
from shared.logs import get_log

log = get_log(__name__)

RunCheck = Callable[[Service, datetime, float], Awaitable[None]]
"""Called with the service, when it was due (UTC) and how late it started (seconds)."""
OnSkip = Callable[[Service, int], None]
"""Called with the service and how many turns were skipped."""
Phase = Callable[[Service], float]
"""The offset of a service's turns within its interval, in seconds of the wall clock."""


def wall_phase(service: Service) -> float:
    """A stable offset in [0, interval) from the service id: due when wall time ≡ it."""
    digest = hashlib.blake2b(service.id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * service.interval_seconds


class Timer(Protocol):
    """A pending call that can be called off."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic time for scheduling, plus the wall time a monotonic instant corresponds to."""

    def now(self) -> float: ...

    def call_at(self, deadline: float, callback: Callable[..., object], *args: Any) -> Timer: ...

    def wall(self, instant: float) -> datetime: ...


TICK = 0.01
"""Seconds: turns start on this grid of the loop clock (see LoopClock)."""


class LoopClock:
    """The event loop's monotonic clock, anchored to wall time once at creation.

    Timers fire on a grid of `tick` seconds: a turn due at 12.3441 starts at 12.35, together
    with every other turn due in that tick. Each wake-up of the event loop costs tens of µs
    of CPU on a VM; at 1,700 checks/s, one wake-up per check (libuv's timers have 1 ms
    resolution) cost more than the checks' Python code, and requests started together also
    get their responses together (bench/bench_prober.py). Due times stay exact (no drift,
    `scheduledAt` is the due time); a turn starts at most `tick` late, and that lateness is
    measured and reported like any other.
    """

    def __init__(self, *, tick: float = TICK) -> None:
        self._loop = asyncio.get_running_loop()
        self._mono0 = self._loop.time()
        self._wall0 = time.time()
        self._tick = tick

    def now(self) -> float:
        return self._loop.time()

    def call_at(self, deadline: float, callback: Callable[..., object], *args: Any) -> Timer:
        if self._tick > 0:
            deadline = math.ceil(deadline / self._tick) * self._tick
        return self._loop.call_at(deadline, callback, *args)

    def wall(self, instant: float) -> datetime:
        return datetime.fromtimestamp(self._wall0 + (instant - self._mono0), UTC)


class Scheduler:
    """Runs each service's checks on its own fixed-rate schedule.

    Each service's next turn is one timer of the event loop (no task per service: at 50,000
    services the sleeping tasks cost ~150 MB and a task wake-up per turn); a turn starts the
    check as a task and sets the timer for the turn after.
    """

    def __init__(
        self,
        services: Iterable[Service],
        *,
        run_check: RunCheck,
        semaphore: asyncio.Semaphore,
        on_skip: OnSkip | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        phase: Phase | None = None,
    ) -> None:
        self._services = {s.id: s for s in services}
        self._run_check = run_check
        self._semaphore = semaphore
        self._on_skip = on_skip
        self._clock = clock
        self._rng = rng or random.Random()
        self._phase = phase
        self._timers: dict[str, Timer] = {}
        self._due: dict[str, float] = {}
        self._retiring: set[str] = set()  # removed, with one turn still to run (see update)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.skipped = 0

    @property
    def in_flight(self) -> int:
        """Checks started and not yet finished."""
        return len(self._running)

    @property
    def scheduled(self) -> int:
        """Services this scheduler runs."""
        return len(self._timers) - len(self._retiring)

    def start(self) -> None:
        """Set every service's first turn."""
        self._clock = self._clock or LoopClock()
        self._loop = asyncio.get_running_loop()
        for service in self._services.values():
            self._begin(service, self._first_due(service))

    def update(
        self, services: Iterable[Service], *, since: float | None = None
    ) -> tuple[list[str], list[str], list[str]]:
        """Schedule exactly `services` from now on: (added, removed, changed) service ids.

        A removed or changed service's running check is left to finish; a changed service
        keeps its next turn when its interval did not change. With `since` (a wall-clock
        time in epoch seconds, usually just past) the change counts from that instant, not
        from when this call runs: an added service's first turn is its first due time at or after
        `since`, and a removed service still takes a turn that was due before it. Replicas
        handing a service over at an agreed instant thus neither both run a turn nor both
        skip it, however late each one's call comes.
        """
        if since is not None and self._clock is not None:  # to an instant of our clock
            now = self._clock.now()
            since = now + (since - self._clock.wall(now).timestamp())
        wanted = {s.id: s for s in services}
        added = [i for i in wanted if i not in self._services]
        removed = [i for i in self._services if i not in wanted]
        changed = [i for i in wanted if i in self._services and wanted[i] != self._services[i]]
        for service_id in removed:
            if since is not None and self._due.get(service_id, math.inf) < since:
                self._retiring.add(service_id)  # its pending turn was ours: run it, then stop
                continue
            timer = self._timers.pop(service_id, None)
            if timer is not None:
                timer.cancel()
            self._due.pop(service_id, None)
        for service_id in changed:
            timer = self._timers.pop(service_id, None)
            if timer is not None:
                timer.cancel()
        old = self._services
        self._services = wanted
        if self._clock is None:  # not started yet
            return added, removed, changed
        for service_id in changed:
            service, due = wanted[service_id], self._due.get(service_id)
            same_rhythm = old[service_id].interval_seconds == service.interval_seconds
            self._begin(service, due if same_rhythm and due is not None else None)
        for service_id in added:
            if service_id in self._retiring:  # back before its last turn: keep the rhythm
                self._retiring.discard(service_id)
                continue
            self._begin(wanted[service_id], self._first_due(wanted[service_id], since))
        return added, removed, changed

    async def stop(self, *, grace: float) -> None:
        """Stop scheduling; give running checks `grace` seconds, then cancel them."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        running = list(self._running.values())
        if running:
            _, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _first_due(self, service: Service, since: float | None = None) -> float:
        assert self._clock is not None
        now = self._clock.now() if since is None else since
        interval = service.interval_seconds
        if self._phase is None:
            return now + self._rng.uniform(0, interval)
        wall = self._clock.wall(now).timestamp()
        return now + (self._phase(service) - wall) % interval

    def _begin(self, service: Service, due: float | None) -> None:
        assert self._clock is not None
        if due is None:
            due = self._first_due(service)
        self._due[service.id] = due
        self._timers[service.id] = self._clock.call_at(due, self._turn, service, due)

    def _turn(self, service: Service, due: float) -> None:
        """A service's turn came: start its check, set the timer for its next turn."""
        try:
            self._fire(service, due)
        finally:
            if self._retiring and service.id in self._retiring:
                self._retiring.discard(service.id)  # its last turn with us (see update)
                self._timers.pop(service.id, None)
                self._due.pop(service.id, None)
            else:
                self._next(service, due)

    def _next(self, service: Service, due: float) -> None:
        assert self._clock is not None
        interval = service.interval_seconds
        due += interval
        behind = self._clock.now() - due
        if behind >= interval:
            # The loop stalled (or the host slept) for whole periods: skip those turns
            # instead of firing a burst of checks that would only overlap.
            missed = math.floor(behind / interval)
            due += missed * interval
            self._skip(service, missed, reason="fell behind")
        self._due[service.id] = due
        self._timers[service.id] = self._clock.call_at(due, self._turn, service, due)

    def _fire(self, service: Service, due: float) -> None:
        if service.id in self._running:
            self._skip(service, 1, reason="still running")
            return
        assert self._loop is not None
        task = self._loop.create_task(self._run(service, due))
        self._running[service.id] = task
        task.add_done_callback(lambda _: self._running.pop(service.id, None))

    async def _run(self, service: Service, due: float) -> None:
        assert self._clock is not None
        async with self._semaphore:
            lateness = max(0.0, self._clock.now() - due)
            try:
                await self._run_check(service, self._clock.wall(due), lateness)
            except Exception:
                log.error("check crashed", exc=True, service=service.id)

    def _skip(self, service: Service, count: int, *, reason: str) -> None:
        self.skipped += count
        log.warning("check skipped", service=service.id, reason=reason, turns=count)
        if self._on_skip is not None:
            self._on_skip(service, count)
