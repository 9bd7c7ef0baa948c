"""`python -m services.recorder` killed mid-stream: a second process finishes, each check once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import nats

from shared.events import check_subject
from shared.settings import Settings
from shared.streams import ensure_streams
from tests.factories import make_check_completed
from tests.polling import eventually

ROOT = Path(__file__).resolve().parents[2]
TOTAL = 3000


def start_recorder(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "DATABASE_URL": settings.database_url,
        "NATS_URL": settings.nats_url,
        "OPS_PORT": "0",
        "RECORDER_BATCH_SIZE": "100",
        "LOG_LEVEL": "info",
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.recorder"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_sigkill_between_commit_and_ack_loses_and_doubles_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    await ensure_streams(js, settings)
    db = await asyncpg.connect(settings.database_url)

    async def rows() -> int:
        return int(await db.fetchval("SELECT count(*) FROM watch_server_logs"))

    async def publish_all() -> None:
        for _ in range(TOTAL):
            check = make_check_completed()
            await js.publish(
                check_subject(check.service_id),
                check.to_wire(),
                headers={"Nats-Msg-Id": str(check.check_id)},
            )
            await asyncio.sleep(0.001)  # a steady stream, not one burst

    first = start_recorder(settings, tmp_path / "first.log")
    second: subprocess.Popen[bytes] | None = None
    try:
        publishing = asyncio.create_task(publish_all())
        await eventually(rows, until=lambda n: n >= 300, timeout=60, what="first recorder storing")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = await rows()
        await publishing
        assert killed_at < TOTAL, "the kill came too late to test anything"

        second = start_recorder(settings, tmp_path / "second.log")
        # Messages the killed process held come back after ack_wait (30 s).
        await eventually(
            rows, until=lambda n: n >= TOTAL, timeout=90, interval=0.5, what="every check stored"
        )
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, (tmp_path / "second.log").read_text()[-2000:]

        assert await rows() == TOTAL
        assert await db.fetchval("SELECT count(DISTINCT check_id) FROM watch_server_logs") == TOTAL
        assert await db.fetchval("SELECT count(*) FROM api_response_times") == TOTAL
        log = (tmp_path / "second.log").read_text()
        assert "recorder_started" in log and "recorder_stopped" in log
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        await db.close()
        await nc.close()
