"""Replica membership against real NATS: a live replica is never missed, a leaving one is
dropped within a heartbeat, a dead one within its lease TTL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client

from services.prober.cluster import ClusterSettings, Membership, owner
from tests.polling import eventually


@pytest.fixture
async def ncs(nats_url: str) -> AsyncIterator[list[Client]]:
    conns = [await nats.connect(nats_url) for _ in range(3)]
    yield conns
    for conn in conns:
        await conn.close()


def member(name: str, *, heartbeat: float, ttl: float, region: str = "eu") -> Membership:
    settings = ClusterSettings(heartbeat_seconds=heartbeat, member_ttl_seconds=ttl)
    return Membership(region=region, prober_id=name, settings=settings, on_change=lambda: None)


async def test_concurrent_heartbeats_never_lose_sight_of_a_live_replica(
    ncs: list[Client],
) -> None:
    """Two replicas beating in step: every listing after both joined shows both.

    (Regression: nats-py's `kv.keys()` builds a consumer per call and returned a short or
    empty list about once in 200 calls while another key was being rewritten; the replica
    then thought it was alone and checked the other's share too.)
    """
    a = member("a", heartbeat=60, ttl=30)
    b = member("b", heartbeat=60, ttl=30)
    await a.join(js=ncs[0].jetstream())
    await b.join(js=ncs[1].jetstream())
    seen: list[tuple[str, ...]] = []

    async def beats(m: Membership) -> None:
        for _ in range(400):
            await m._beat()
            seen.append(m.members)

    try:
        await asyncio.gather(beats(a), beats(b))
    finally:
        await a.leave()
        await b.leave()
    short = [members for members in seen if len(members) != 2]
    assert not short, f"{len(short)} of {len(seen)} listings missed a live replica: {short[:3]}"


async def test_a_leaving_replica_is_dropped_at_once_a_dead_one_after_its_ttl(
    ncs: list[Client],
) -> None:
    a, b, c = (member(name, heartbeat=0.05, ttl=2.0) for name in "abc")
    other_region = member("x", heartbeat=0.05, ttl=2.0, region="us")
    for m, nc in zip((a, b, c), ncs, strict=True):
        await m.join(js=nc.jetstream())
    await other_region.join(js=ncs[0].jetstream())
    try:
        await eventually(
            lambda: _is(a.members == ("eu.a", "eu.b", "eu.c")), timeout=5, what="a sees a, b, c"
        )
        # Clean leave: the lease is removed, the others drop it at their next heartbeat,
        # long before the TTL would have.
        loop = asyncio.get_running_loop()
        await b.leave()
        left = loop.time()
        await eventually(lambda: _is(a.members == ("eu.a", "eu.c")), timeout=5, what="b gone")
        assert loop.time() - left < 1.5
        # Death: c stops beating without a word; its lease expires after the TTL. (The flag
        # too: a cancel alone can be swallowed by a request in flight, see Membership.leave.)
        assert c._task is not None
        c._leaving = True
        c._task.cancel()
        await asyncio.wait({c._task})
        died = loop.time()
        await eventually(lambda: _is(a.members == ("eu.a",)), timeout=5, what="c expired")
        assert 1.8 < loop.time() - died < 4.0
        assert a.owns("anything")
    finally:
        for m in (a, other_region):
            await m.leave()


async def test_a_joining_replica_and_the_old_owner_hand_its_share_over_at_one_instant(
    ncs: list[Client],
) -> None:
    """B joins A: A goes on checking B's share until B's join time + 2 heartbeats, and B
    starts at that very instant, so no turn is checked twice or skipped."""
    changed: dict[str, list[float]] = {"a": [], "b": []}

    def watched(name: str) -> Membership:
        settings = ClusterSettings(heartbeat_seconds=0.2, member_ttl_seconds=5)
        on_change = lambda: changed[name].append(time.time())  # noqa: E731
        return Membership(region="eu", prober_id=name, settings=settings, on_change=on_change)

    a = watched("a")
    await a.join(js=ncs[0].jetstream())
    await asyncio.sleep(0.5)  # a is past its own instant: a running group of one
    b = watched("b")
    service = next(
        s for s in (f"svc-{i}" for i in range(100)) if owner(s, ("eu.a", "eu.b")) == "eu.b"
    )
    assert a.owns(service)
    try:
        await b.join(js=ncs[1].jetstream())
        assert b.members == ("eu.a", "eu.b") and b.owners == ("eu.a",)
        assert not b.owns(service)
        await eventually(lambda: _is(b.owns(service)), timeout=5, what="b takes its share")
        assert a.owners == b.owners == ("eu.a", "eu.b") and not a.owns(service)
        handover = b._joined + 0.4
        released, taken = changed["a"][-1], changed["b"][-1]
        assert abs(released - handover) < 0.1 and abs(taken - handover) < 0.1, (
            handover,
            released,
            taken,
        )
        assert len(changed["a"]) == 2 and len(changed["b"]) == 2  # alone/none, then both
    finally:
        await a.leave()
        await b.leave()


async def _is(value: bool) -> bool:
    return value
