"""PostgreSQL stops while checks keep coming: monitoring goes on, the API degrades
gracefully, and after PostgreSQL returns every check lands exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest

from tests.conftest import Infra
from tests.e2e.conftest import ScheduledTarget, Stack, api_get, catalog
from tests.polling import eventually

pytestmark = pytest.mark.timeout(240)


async def _counts(db_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT service_id, count(*) AS n FROM watch_server_logs GROUP BY 1"
        )
        return {r["service_id"]: r["n"] for r in rows}
    finally:
        await conn.close()


async def test_database_outage_loses_nothing(
    make_stack: Callable[[str], Stack], target: ScheduledTarget, db_url: str, infra: Infra
) -> None:
    stack = make_stack(catalog(target.url))
    await stack.wait_api()
    path = "/api/metrics/e2e-steady?days=1"

    async def good_answer() -> dict:
        r = await api_get(stack, path)
        return r.json() if r.status_code == 200 else {}

    first = await eventually(
        good_answer,
        until=lambda m: (m.get("totalRequests") or 0) >= 5,
        timeout=60,
        what="a first good metrics answer",
    )
    assert first["stale"] is False

    # In a thread: the targets run in this event loop and must keep answering the prober.
    await asyncio.to_thread(infra.pg.stop)
    try:
        served_at_outage = target.total("steady")
        health = await eventually(
            lambda: _json(stack, "/health"),
            until=lambda h: h.get("database") == "down",
            timeout=30,
            what="/health reporting the database down",
        )
        assert health["status"] == "degraded"
        stale = await eventually(
            lambda: _json(stack, path),
            until=lambda m: m.get("stale") is True,
            timeout=30,
            what="a stale metrics answer",
        )
        assert stale["totalRequests"] >= first["totalRequests"]
        assert stale["computedAt"]
        never_asked = await api_get(stack, "/api/sla/e2e-flaky?days=7")
        assert never_asked.status_code == 503
        # The prober goes on checking while the database is away.
        await eventually(
            lambda: _served(target),
            until=lambda n: n >= served_at_outage + 20,
            timeout=30,
            what="checks continuing during the outage",
        )
    finally:
        await asyncio.to_thread(infra.pg.start)

    assert await stack.stop("prober") == 0
    truth = {"e2e-flaky": target.total("flaky"), "e2e-steady": target.total("steady")}
    await eventually(
        lambda: _counts(db_url), until=lambda c: c == truth, timeout=60, what=f"raw rows == {truth}"
    )
    recovered = await eventually(
        good_answer,
        until=lambda m: m.get("totalRequests") == truth["e2e-steady"],
        timeout=60,
        what="metrics caught up",
    )
    assert recovered["stale"] is False
    health = await eventually(
        lambda: _json(stack, "/health"),
        until=lambda h: h.get("status") == "ok",
        timeout=30,
        what="/health ok again",
    )
    assert health["database"] == "up"


async def _json(stack: Stack, path: str) -> dict:
    r = await api_get(stack, path)
    try:
        return r.json()
    except ValueError:
        return {}


async def _served(target: ScheduledTarget) -> int:
    return target.total("steady")
