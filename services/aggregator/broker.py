"""The aggregator's NATS surface: one durable pull consumer and the subjects it publishes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated

from faststream import AckPolicy, Context
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.message import NatsBatchMessage
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import ConsumerConfig, DeliverPolicy

from services.aggregator.consumer import CONSUMER, MAX_DELIVER
from shared.events import (
    CHECK_SUBJECTS,
    CHECKS_STREAM,
    DLQ_STREAM,
    DLQ_SUBJECT,
    EVENTS_STREAM,
    SLA_SUBJECT,
    STATUS_SUBJECT,
    CheckCompleted,
    SlaBreached,
    SlaRecovered,
    StatusChanged,
)
from shared.settings import Settings

BatchHandler = Callable[[NatsBatchMessage], Awaitable[None]]
BATCH_TIMEOUT_SECONDS = 0.2
ACK_WAIT_SECONDS = 60.0


async def _defer_decoding(message: NatsBatchMessage) -> list[object]:
    # The handler validates each raw message itself, so a malformed one is dead-lettered
    # instead of failing the whole batch in faststream's decoder; the body annotation is
    # kept for the AsyncAPI document.
    return []


def checks_consumer_config(settings: Settings) -> ConsumerConfig:
    """The durable checks consumer as the aggregator declares it."""
    return ConsumerConfig(
        durable_name=CONSUMER,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=JsAckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT_SECONDS,
        max_deliver=MAX_DELIVER,
        max_ack_pending=max(1000, 8 * settings.aggregator_batch_size),
    )


def build_broker(
    settings: Settings, *, on_batch: BatchHandler | None = None, include_checks: bool = True
) -> NatsBroker:
    """The aggregator's broker with its subscriber and publishers declared, not connected.

    The running service passes include_checks=False: it pulls checks with
    shared.jetstream_pull (no per-message fetch overhead).
    """
    broker = NatsBroker(
        [url.strip() for url in settings.nats_url.split(",")],
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        graceful_timeout=30.0,
        # Through the service's own log format (and level) instead of faststream's handler.
        logger=logging.getLogger("faststream.aggregator"),
    )

    if include_checks:

        @broker.subscriber(
            CHECK_SUBJECTS,
            stream=JStream(CHECKS_STREAM, declare=False),
            durable=CONSUMER,
            pull_sub=PullSub(
                batch_size=settings.aggregator_batch_size, timeout=BATCH_TIMEOUT_SECONDS, batch=True
            ),
            config=checks_consumer_config(settings),
            ack_policy=AckPolicy.MANUAL,
            decoder=_defer_decoding,
            title="aggregator:watch.check.>",
            description=(
                "Durable pull consumer `aggregator` on WATCH_CHECKS: counts each check once into "
                "api_call_logs, api_call_logs_hourly and uptime_records; acks after commit."
            ),
        )
        async def consume_checks(
            body: list[CheckCompleted],
            message: Annotated[NatsBatchMessage, Context("message")],
        ) -> None:
            if on_batch is None:  # a broker built for the AsyncAPI document only
                raise RuntimeError("aggregator broker built without a batch handler")
            await on_batch(message)

    events = JStream(EVENTS_STREAM, declare=False)
    broker.publisher(
        STATUS_SUBJECT,
        stream=events,
        schema=StatusChanged,
        title="aggregator:status-changed",
        description="A service's check status changed (the first check too, with from=null); "
        "Nats-Msg-Id = status-<checkId>.",
    )
    broker.publisher(
        SLA_SUBJECT,
        stream=events,
        schema=SlaBreached | SlaRecovered,
        title="aggregator:sla",
        description="Uptime over the rolling SLA window crossed the service's target: "
        "SlaBreached below it, SlaRecovered back at or above it.",
    )
    broker.publisher(
        DLQ_SUBJECT.format(consumer=CONSUMER),
        stream=JStream(DLQ_STREAM, declare=False),
        schema=bytes,
        title="aggregator:dead-letter",
        description="Malformed checks: the original bytes, with headers Watch-Dlq-Reason, "
        "Watch-Dlq-Subject and Watch-Dlq-Consumer.",
    )
    return broker
