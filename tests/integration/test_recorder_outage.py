"""The recorder while PostgreSQL is down: nothing acked, nothing lost, each check once."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import nats

from services.recorder.service import Recorder
from shared.events import check_subject
from shared.settings import Settings
from tests.conftest import Infra
from tests.factories import make_check_completed
from tests.polling import eventually


async def test_results_published_during_an_outage_land_once_after_it(
    infra: Infra, settings: Settings
) -> None:
    rec = Recorder(settings=settings)
    await rec.start()
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    checks = [make_check_completed() for _ in range(60)]
    readyz = f"http://127.0.0.1:{rec.ops.port}/readyz"  # type: ignore[union-attr]
    try:
        for check in checks[:10]:
            await js.publish(
                check_subject(check.service_id),
                check.to_wire(),
                headers={"Nats-Msg-Id": str(check.check_id)},
            )
        infra.pg.stop()
        try:
            for check in checks[10:]:
                await js.publish(
                    check_subject(check.service_id),
                    check.to_wire(),
                    headers={"Nats-Msg-Id": str(check.check_id)},
                )
            async with httpx.AsyncClient() as client:
                not_ready = await eventually(
                    lambda: client.get(readyz),
                    until=lambda r: r.status_code == 503,
                    what="readyz false while the database is down",
                )
            assert not_ready.json()["database"] is False
            assert rec.metrics.registry.get_sample_value("db_up") == 0
        finally:
            infra.pg.start()

        conn = await asyncpg.connect(settings.database_url)
        try:

            async def rows() -> int:
                return int(await conn.fetchval("SELECT count(*) FROM watch_server_logs"))

            await eventually(rows, until=lambda n: n >= 60, timeout=60, what="backlog drained")
            rows_ = await conn.fetch("SELECT check_id FROM watch_server_logs")
            ids = [r["check_id"] for r in rows_]
            assert sorted(ids) == sorted(c.check_id for c in checks)
            assert await conn.fetchval("SELECT count(*) FROM api_response_times") == 60
        finally:
            await conn.close()
        async with httpx.AsyncClient() as client:
            await eventually(
                lambda: client.get(readyz), until=lambda r: r.status_code == 200, what="ready again"
            )
        assert rec.metrics.registry.get_sample_value("db_up") == 1
        assert rec.metrics.registry.get_sample_value("results_stored_total") == 60
    finally:
        await nc.close()
        await rec.stop()


async def test_start_waits_for_the_database_then_records(infra: Infra, settings: Settings) -> None:
    rec = Recorder(settings=settings)
    infra.pg.stop()
    try:
        starting = asyncio.create_task(rec.start())
        await eventually(
            lambda: asyncio.sleep(0, rec.health.up),
            until=lambda up: up is False,
            what="database seen down at start",
        )
        assert not starting.done()
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{rec.ops.port}/readyz")  # type: ignore[union-attr]
        assert r.status_code == 503
    finally:
        infra.pg.start()
    try:
        await asyncio.wait_for(starting, 60)
        nc = await nats.connect(settings.nats_url)
        try:
            check = make_check_completed()
            await nc.jetstream().publish(check_subject(check.service_id), check.to_wire())
        finally:
            await nc.close()
        conn = await asyncpg.connect(settings.database_url)
        try:
            await eventually(
                lambda: conn.fetchval("SELECT count(*) FROM watch_server_logs"),
                until=lambda n: n == 1,
                what="row after a late database",
            )
        finally:
            await conn.close()
    finally:
        await rec.stop()
