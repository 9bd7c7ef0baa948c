"""How far a durable consumer is behind its stream, sampled into Prometheus gauges.

`consumer_pending` is what JetStream still has to deliver, `consumer_ack_pending` what is
delivered but not acked yet, and `consumer_lag_seconds` the age of the oldest message not
acked (0 when there is none): during an outage it grows, and after it the drain is visible.
Used by the recorder and the aggregator.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry, Gauge

from shared.logs import get_log

log = get_log(__name__)


class BacklogGauges:
    """The three gauges, registered in a service's own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.pending = Gauge(
            "consumer_pending",
            "Messages of the stream not yet delivered to this durable consumer.",
            registry=registry,
        )
        self.ack_pending = Gauge(
            "consumer_ack_pending",
            "Messages delivered to this durable consumer and not acked yet.",
            registry=registry,
        )
        self.lag_seconds = Gauge(
            "consumer_lag_seconds",
            "Age of the oldest message the consumer has not acked (0 when caught up).",
            registry=registry,
        )


async def sample(
    *, js: JetStreamContext, stream: str, durable: str, subjects: str, gauges: BacklogGauges
) -> None:
    """Read the consumer's state once and set the gauges."""
    info = await js.consumer_info(stream, durable)
    pending, unacked = int(info.num_pending or 0), int(info.num_ack_pending or 0)
    lag = 0.0
    if pending or unacked:
        floor = info.ack_floor.stream_seq if info.ack_floor and info.ack_floor.stream_seq else 0
        oldest = await js.get_msg(stream, seq=floor + 1, subject=subjects, next=True)
        if oldest.time is not None:
            lag = max(0.0, (datetime.now(UTC) - oldest.time).total_seconds())
    # Set together, with no await in between, so a scrape never sees half a sample.
    gauges.pending.set(pending)
    gauges.ack_pending.set(unacked)
    gauges.lag_seconds.set(lag)


async def sample_forever(
    *,
    js: JetStreamContext,
    stream: str,
    durable: str,
    subjects: str,
    gauges: BacklogGauges,
    interval: float = 5.0,
) -> None:
    """Sample every `interval` seconds until cancelled; NATS trouble is logged once."""
    failing = False
    while True:
        try:
            await sample(js=js, stream=stream, durable=durable, subjects=subjects, gauges=gauges)
            failing = False
        except Exception as exc:
            if not failing:
                log.warning("backlog_sample_failed", consumer=durable, error=type(exc).__name__)
            failing = True
        await asyncio.sleep(interval)
