"""The aggregator as a separate process, SIGKILLed mid-stream and restarted: every check
still counts exactly once, and SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from shared.settings import Settings
from tests.factories import make_check_completed
from tests.integration.test_aggregator_service import (
    add_service,
    assert_rollups_equal_truth,
    jetstream,
    publish,
    rows,
    truth_checks,
)
from tests.polling import eventually

REPO = Path(__file__).resolve().parents[2]
VOLUME = 3000  # extra checks of svc-c, so that kills land mid-stream


class AggregatorProcess:
    """`python -m services.aggregator` in its own process group, stopped by PID."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": settings.database_url,
            "NATS_URL": settings.nats_url,
            "OPS_PORT": "0",
            "AGGREGATOR_BATCH_SIZE": "50",
        }
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.aggregator"],
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def signal(self, sig: int, timeout: float = 30) -> int:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)
        return self.proc.wait(timeout)

    def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGKILL)


async def applied_count(db_url: str) -> int:
    return int((await rows(db_url, "SELECT count(*) AS n FROM aggregator_applied"))[0]["n"])


@pytest.mark.timeout(180)
async def test_sigkill_mid_stream_then_restart_counts_each_check_once(
    settings: Settings, tmp_path: Path
) -> None:
    await add_service(settings.database_url, "svc-a", 99.9)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    volume = [
        make_check_completed(service_id="svc-c", started_at=start + timedelta(milliseconds=i))
        for i in range(VOLUME)
    ]
    checks = truth_checks()
    everything = [c for pair in zip(volume, checks, strict=False) for c in pair]
    everything += volume[len(checks) :]
    agg = AggregatorProcess(settings, tmp_path / "aggregator.log")
    try:
        async with jetstream(settings) as js:
            # The durable consumer as the service declares it, but with a short ack_wait, so
            # the batches of a killed process come back in seconds (an existing consumer is
            # bound as it is).
            await js.add_consumer(
                "WATCH_CHECKS",
                ConsumerConfig(
                    durable_name="aggregator",
                    deliver_policy=DeliverPolicy.ALL,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=2.0,
                    max_deliver=50,
                    filter_subject="watch.check.>",
                    max_ack_pending=8000,
                ),
            )
            await publish(js, everything)
        db_url = settings.database_url
        for target in (400, 1200, 2000):
            agg.start()
            await eventually(
                lambda: applied_count(db_url),
                until=lambda n, t=target: n >= t,
                timeout=60,
                what=f"{target} checks applied",
            )
            assert agg.signal(signal.SIGKILL) == -signal.SIGKILL
        agg.start()

        async def counted() -> int:
            r = await rows(db_url, "SELECT coalesce(sum(total_checks), 0) AS n FROM api_call_logs")
            return int(r[0]["n"])

        await eventually(
            counted, until=lambda n: n >= len(everything), timeout=90, what="every check counted"
        )
        await assert_rollups_equal_truth(db_url)
        c = await rows(
            db_url,
            "SELECT total_requests, successful_requests FROM api_call_logs "
            "WHERE service_id = 'svc-c'",
        )
        assert sum(r["total_requests"] for r in c) == VOLUME
        assert sum(r["successful_requests"] for r in c) == VOLUME
        assert await applied_count(db_url) == len(everything)
        assert agg.signal(signal.SIGTERM) == 0
    except BaseException:
        print(agg.log.read_text(errors="replace")[-5000:])
        raise
    finally:
        agg.ensure_stopped()
