"""PostgreSQL stopped and restarted while both ingest services are busy: nothing lost,
nothing doubled, the rollups still equal a recompute from the raw tables."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from shared.settings import Settings
from tests.conftest import Infra
from tests.integration.test_ingest_crash import (
    ServiceProc,
    add_consumers,
    add_services,
    assert_rollups_equal_raw,
    jetstream,
    make_results,
    publish_one,
    scalar,
    settled,
)
from tests.polling import eventually


@pytest.mark.timeout(180)
async def test_postgres_restart_mid_batch_loses_and_doubles_nothing(
    settings: Settings, infra: Infra, tmp_path: Path
) -> None:
    db_url = settings.database_url
    await add_services(db_url)
    results = make_results(3000, seed=7)
    recorder = ServiceProc("recorder", settings, tmp_path / "recorder.log")
    aggregator = ServiceProc("aggregator", settings, tmp_path / "aggregator.log")

    async def raw_rows() -> int:
        return await scalar(db_url, "SELECT count(*) FROM watch_server_logs")

    try:
        async with jetstream(settings) as js:
            await add_consumers(js)
            recorder.start()
            aggregator.start()
            for check in results[:1000]:
                await publish_one(js, check, str(check.check_id))
            await eventually(raw_rows, until=lambda n: n > 0, timeout=30, what="first rows")
            # Batches are in flight now: stop the database under them, keep publishing.
            await asyncio.to_thread(infra.pg.stop)
            try:
                for check in results[1000:]:
                    await publish_one(js, check, str(check.check_id))
                await asyncio.sleep(2)  # the services retry against a dead database meanwhile
            finally:
                await asyncio.to_thread(infra.pg.start)
            await eventually(raw_rows, until=lambda n: n >= len(results), timeout=90)
            await settled(js, timeout=90)
            assert await raw_rows() == len(results)
            assert await scalar(db_url, "SELECT count(*) FROM aggregator_applied") == len(results)
            await assert_rollups_equal_raw(db_url)
            assert recorder.signal(signal.SIGTERM) == 0
            assert aggregator.signal(signal.SIGTERM) == 0
    except BaseException:
        print("--- recorder\n" + recorder.tail() + "\n--- aggregator\n" + aggregator.tail())
        raise
    finally:
        recorder.ensure_stopped()
        aggregator.ensure_stopped()
