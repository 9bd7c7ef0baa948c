"""The recorder registers the catalog: created, updated, marked inactive, never rolled back."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import nats
import pytest
from nats.js import JetStreamContext

from services.recorder.service import Recorder
from shared.events import SERVICE_SUBJECT, ServiceDefined
from shared.settings import Settings
from tests.factories import make_service_defined
from tests.polling import eventually


@pytest.fixture
async def js(settings: Settings) -> AsyncIterator[JetStreamContext]:
    rec = Recorder(settings=settings)
    await rec.start()  # declares the streams
    nc = await nats.connect(settings.nats_url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()
        await rec.stop()


async def define(js: JetStreamContext, service: ServiceDefined) -> None:
    await js.publish(SERVICE_SUBJECT.format(service_id=service.service_id), service.to_wire())


async def services(settings: Settings) -> dict[str, asyncpg.Record]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return {r["id"]: r for r in await conn.fetch("SELECT * FROM services")}
    finally:
        await conn.close()


async def test_catalog_is_created_updated_and_marked_inactive(
    settings: Settings, js: JetStreamContext
) -> None:
    t0 = datetime.now(UTC)
    await define(js, make_service_defined(service_id="svc-a", name="A", defined_at=t0))
    await define(
        js, make_service_defined(service_id="svc-b", name="B", sla_target=99.0, defined_at=t0)
    )
    rows = await eventually(
        lambda: services(settings), until=lambda r: len(r) == 2, what="two services"
    )
    assert rows["svc-b"]["sla_target"] == 99.0
    assert rows["svc-a"]["active"] is True
    assert json.loads(rows["svc-a"]["endpoints"])[0]["url"] == "http://127.0.0.1:9/health"
    created_a = rows["svc-a"]["created_at"]

    t1 = t0 + timedelta(seconds=5)
    await define(
        js, make_service_defined(service_id="svc-a", name="A v2", timeout_ms=2000, defined_at=t1)
    )
    await define(
        js, make_service_defined(service_id="svc-b", name="B", active=False, defined_at=t1)
    )
    rows = await eventually(
        lambda: services(settings),
        until=lambda r: r["svc-a"]["name"] == "A v2" and r["svc-b"]["active"] is False,
        what="update and removal applied",
    )
    assert rows["svc-a"]["timeout_ms"] == 2000
    assert rows["svc-a"]["created_at"] == created_a  # the same row, updated

    # A late, older definition must not roll the row back.
    await define(js, make_service_defined(service_id="svc-a", name="A stale", defined_at=t0))
    await define(js, make_service_defined(service_id="svc-c", name="C", defined_at=t1))
    rows = await eventually(
        lambda: services(settings), until=lambda r: "svc-c" in r, what="marker service"
    )
    assert rows["svc-a"]["name"] == "A v2"
    assert rows["svc-b"]["active"] is False
