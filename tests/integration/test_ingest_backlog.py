"""The catch-up is visible: /metrics of the recorder and the aggregator show the consumer's
pending count and lag while a backlog waits, and zeros once it has drained."""

from __future__ import annotations

import asyncio
import re

import httpx

from services.aggregator.service import Aggregator
from services.recorder.service import Recorder
from shared.settings import Settings
from tests.factories import make_check_completed
from tests.integration.test_ingest_crash import add_consumers, jetstream, publish_one, settled
from tests.polling import eventually


def gauge(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match[1])


async def test_pending_and_lag_on_metrics_during_and_after_a_backlog(settings: Settings) -> None:
    async with jetstream(settings) as js:
        await add_consumers(js)
        for _ in range(2000):
            check = make_check_completed()
            await publish_one(js, check, str(check.check_id))
        await asyncio.sleep(1.0)  # the backlog ages while nothing consumes
        recorder, aggregator = Recorder(settings=settings), Aggregator(settings=settings)
        # Sampled before consuming starts: what an operator sees right after an outage.
        await recorder.start()
        await aggregator.start()
        try:
            async with httpx.AsyncClient() as http:
                urls = [
                    f"http://127.0.0.1:{recorder.ops.port}/metrics",  # type: ignore[union-attr]
                    f"http://127.0.0.1:{aggregator.ops.port}/metrics",
                ]

                async def first_sample(url: str) -> str:
                    return (await http.get(url)).text

                for url in urls:
                    # The first sample is taken by a background task just after start.
                    text = await eventually(
                        lambda url=url: first_sample(url),  # type: ignore[misc]
                        until=lambda t: (
                            gauge(t, "consumer_pending") + gauge(t, "consumer_ack_pending") > 0
                        ),
                        timeout=10,
                        what="a first backlog sample",
                    )
                    backlog = gauge(text, "consumer_pending") + gauge(text, "consumer_ack_pending")
                    assert 0 < backlog <= 2000
                    assert gauge(text, "consumer_lag_seconds") >= 1.0
                await settled(js)

                async def drained() -> list[float]:
                    out = []
                    for service in (recorder.metrics, aggregator.metrics):
                        await asyncio.sleep(0)
                        out.append(service.registry.get_sample_value("consumer_lag_seconds") or 0.0)
                    return out

                await eventually(drained, until=lambda v: v == [0.0, 0.0], timeout=15)
                for u in urls:
                    text = (await http.get(u)).text
                    assert gauge(text, "consumer_pending") == 0
                    assert gauge(text, "consumer_lag_seconds") == 0
        finally:
            await recorder.stop()
            await aggregator.stop()
