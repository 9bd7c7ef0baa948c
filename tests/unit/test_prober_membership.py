"""Leaving while a heartbeat is in flight, which real NATS only shows by chance: the purge
must come after the last write of the lease, or the lease comes back until its TTL."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from services.prober.cluster import SUBJECT_PREFIX, ClusterSettings, Membership


class SlowKV:
    """A KV whose puts take a while once asked to; records when each started and ended."""

    def __init__(self) -> None:
        self.puts: list[tuple[float, float]] = []
        self.slow = False
        self.beating = asyncio.Event()  # a few puts went through
        self.in_put = asyncio.Event()  # a slow put is under way

    async def put(self, key: str, value: bytes) -> int:
        started = time.monotonic()
        if self.slow:
            self.in_put.set()
            await asyncio.sleep(0.3)
        self.puts.append((started, time.monotonic()))
        if len(self.puts) >= 3:
            self.beating.set()
        return len(self.puts)


class FakeJS:
    def __init__(self, key: str) -> None:
        self.key = key
        self.purged_at: float | None = None

    async def stream_info(self, name: str, subjects_filter: str) -> SimpleNamespace:
        return SimpleNamespace(state=SimpleNamespace(subjects={SUBJECT_PREFIX + self.key: 1}))

    async def purge_stream(self, name: str, subject: str) -> bool:
        self.purged_at = time.monotonic()
        return True


def beating(*, heartbeat: float, ttl: float) -> tuple[Membership, SlowKV, FakeJS]:
    """A member whose heartbeat runs against the fakes (no NATS)."""
    settings = ClusterSettings(heartbeat_seconds=heartbeat, member_ttl_seconds=ttl)
    member = Membership(region="eu", prober_id="a", settings=settings, on_change=lambda: None)
    kv, js = SlowKV(), FakeJS(member.key)
    member._kv, member._js = kv, js  # type: ignore[assignment]
    member._task = asyncio.create_task(member._run())
    return member, kv, js


async def test_leave_purges_the_lease_after_the_beat_in_flight_and_writes_it_no_more() -> None:
    member, kv, js = beating(heartbeat=0.01, ttl=5)
    await asyncio.wait_for(kv.beating.wait(), 5)
    kv.slow = True
    await asyncio.wait_for(kv.in_put.wait(), 5)  # the heartbeat is now inside a put

    started = time.monotonic()
    await member.leave()
    assert time.monotonic() - started < 1.0  # the beat finished; not the 2 s bound
    assert member._task is None and js.purged_at is not None
    await asyncio.sleep(0.1)
    assert all(end <= js.purged_at for _, end in kv.puts)  # the purge came last
    assert len(kv.puts) >= 4  # ...after the put that was in flight


async def test_leave_while_asleep_cancels_the_heartbeat_at_once() -> None:
    member, kv, js = beating(heartbeat=30, ttl=60)
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await member.leave()
    assert time.monotonic() - started < 0.5 and js.purged_at is not None and not kv.puts
