"""Membership edge cases that real NATS only shows by chance: a swallowed cancellation."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from services.prober.cluster import SUBJECT_PREFIX, ClusterSettings, Membership


class StickyKV:
    """A KV whose put, once asked to, swallows the cancellation that meets its reply (as
    Python 3.11's asyncio.wait_for inside nats-py's requests can)."""

    def __init__(self) -> None:
        self.puts: list[float] = []
        self.sticky = False
        self.beating = asyncio.Event()  # a few puts went through
        self.stuck = asyncio.Event()  # a sticky put is waiting

    async def put(self, key: str, value: bytes) -> int:
        self.puts.append(time.monotonic())
        if len(self.puts) >= 3:
            self.beating.set()
        if self.sticky:
            self.stuck.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                return len(self.puts)  # the reply won: the caller never sees the cancel
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


async def test_leave_ends_the_heartbeat_even_when_a_request_swallows_the_cancel() -> None:
    settings = ClusterSettings(heartbeat_seconds=0.01, member_ttl_seconds=5)
    member = Membership(region="eu", prober_id="a", settings=settings, on_change=lambda: None)
    kv, js = StickyKV(), FakeJS(member.key)
    member._kv, member._js = kv, js  # type: ignore[assignment]
    member._task = asyncio.create_task(member._run())
    await asyncio.wait_for(kv.beating.wait(), 5)
    kv.sticky = True
    await asyncio.wait_for(kv.stuck.wait(), 5)  # the heartbeat is now inside a sticky put

    started = time.monotonic()
    await member.leave()
    assert time.monotonic() - started < 1.0  # not the 2 s bound on a stuck task
    assert member._task is None and js.purged_at is not None
    await asyncio.sleep(0.1)
    assert all(t <= js.purged_at for t in kv.puts)  # the lease is never written again
