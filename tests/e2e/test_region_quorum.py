"""Probers in three regions and the aggregator as processes: one region seeing a service
down does not move its status; two of three do, and StatusChanged names the regions."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from aiohttp import web

from deploy.local.supervisor import LogSink, ServiceProcess, service_env, stop_all
from tests.polling import eventually
from tests.targets import Target

REPO = Path(__file__).resolve().parents[2]
REGIONS = ("eu", "us", "ap")


class RegionTarget(Target):
    """Answers 503 to the regions the test says are cut off (by the X-Region header)."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: set[str] = set()
        self.by_region: dict[str, int] = {}

    async def _handle(self, request: web.Request) -> web.Response:
        region = request.headers.get("X-Region", "?")
        self.by_region[region] = self.by_region.get(region, 0) + 1
        return web.Response(status=503 if region in self.failing else 200, text=region)


@pytest.fixture
async def target() -> AsyncIterator[RegionTarget]:
    t = RegionTarget()
    await t.start()
    yield t
    await t.stop()


class Events:
    """Core-NATS subscriber to what the services publish."""

    def __init__(self) -> None:
        self.status: list[dict[str, Any]] = []
        self.checks: list[dict[str, Any]] = []

    async def on_status(self, msg: Any) -> None:
        self.status.append(json.loads(msg.data))

    async def on_check(self, msg: Any) -> None:
        self.checks.append(json.loads(msg.data))


async def _count(items: list[Any]) -> int:
    return len(items)


@pytest.mark.timeout(180)
async def test_status_needs_half_of_the_regions_down(
    db_url: str, nats_url: str, tmp_path: Path, target: RegionTarget
) -> None:
    catalog = tmp_path / "services.yaml"
    catalog.write_text(
        "services:\n"
        "  - id: quorum\n"
        "    interval: 1s\n"
        "    timeout: 2s\n"
        "    endpoints:\n"
        f"      - {{name: health, url: '{target.url}', headers: {{X-Region: '${{REGION}}'}}}}\n"
    )
    base = {k: v for k, v in os.environ.items() if k != "PROBER_ID"}
    base.update(NATS_URL=nats_url, DATABASE_URL=db_url, SERVICES_FILE=str(catalog), OPS_PORT="0")
    sink = LogSink(tmp_path / "services.log")
    sink.keep_lines = True
    events = Events()
    nc = await nats.connect(nats_url)
    await nc.subscribe("watch.event.status.quorum", cb=events.on_status)
    await nc.subscribe("watch.check.quorum", cb=events.on_check)
    processes = [ServiceProcess("aggregator", env=service_env(base), sink=sink, cwd=REPO)]
    processes += [
        ServiceProcess("prober", env=service_env(base, REGION=r), sink=sink, cwd=REPO)
        for r in REGIONS
    ]
    try:
        for p in processes:
            p.start()

        await eventually(lambda: _count(events.status), until=lambda n: n >= 1, what="first")
        assert (events.status[0]["from"], events.status[0]["to"]) == (None, "up")

        # All three regions vote before one is cut off (the probers start one by one; with
        # eu and one other voting, eu alone is already half).
        async def regions_checking() -> set[str]:
            return {c["region"] for c in events.checks}

        await eventually(regions_checking, until=lambda r: r == set(REGIONS), what="regions")

        # eu alone is cut off: its checks are down, the service's status stays up.
        target.failing = {"eu"}
        mark = len(events.checks)

        async def eu_down() -> int:
            return sum(c["region"] == "eu" and c["status"] == "down" for c in events.checks[mark:])

        await eventually(eu_down, until=lambda n: n >= 3, timeout=30, what="3 eu down checks")
        assert len(events.status) == 1, events.status

        # us too: two regions of three, the service is down.
        target.failing = {"eu", "us"}
        await eventually(lambda: _count(events.status), until=lambda n: n >= 2, what="down")
        down = events.status[1]
        assert (down["from"], down["to"]) == ("up", "down")
        assert down["regions"] == {"ap": "up", "eu": "down", "us": "down"}

        target.failing = set()
        await eventually(lambda: _count(events.status), until=lambda n: n >= 3, what="up")
        assert (events.status[2]["from"], events.status[2]["to"]) == ("down", "up")
        await asyncio.sleep(2)  # nothing more happens while all regions see it up
        assert len(events.status) == 3, events.status
        assert set(target.by_region) == set(REGIONS)
    finally:
        await nc.close()
        await asyncio.to_thread(stop_all, processes)
        sink.close()
    assert not [line for line in sink.lines if line.startswith("ERROR")]
