"""The recorder's subscribers and publishers, declared on a faststream NatsBroker."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated, Protocol

from faststream import AckPolicy, Context
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.message import NatsBatchMessage
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig
from pydantic import SkipValidation

from shared.events import (
    CHECK_SUBJECTS,
    CHECKS_STREAM,
    DLQ_STREAM,
    DLQ_SUBJECT,
    SERVICE_SUBJECTS,
    SERVICES_STREAM,
    CheckCompleted,
    ServiceDefined,
)
from shared.settings import Settings

CHECKS_CONSUMER = "recorder"
SERVICES_CONSUMER = "recorder-services"
DLQ_RECORDER_SUBJECT = DLQ_SUBJECT.format(consumer="recorder")
BATCH_TIMEOUT_SECONDS = 0.25  # low latency at low rates; full batches under load
ACK_WAIT_SECONDS = 30.0
# A message is redelivered only when a replica died holding it (a held batch sends
# in-progress acks). Past this many deliveries JetStream stops offering it: a message that
# crashes every replica must not stop the stream forever.
MAX_DELIVER = 50
# Redeliveries after a replica died holding a message come later and later (the first one
# after ACK_WAIT_SECONDS), so a message that crashes every replica does not crash-loop them.
REDELIVERY_BACKOFF_SECONDS = (ACK_WAIT_SECONDS, 60.0, 120.0, 300.0, 600.0)
SERVICES_BATCH_SIZE = 100


class BatchHandler(Protocol):
    """Something that processes a batch of raw JetStream messages and settles each one."""

    async def handle(self, msgs: Sequence[Msg]) -> None:
        """Process the batch."""
        ...


async def _raw_bodies(msg: NatsBatchMessage) -> list[bytes]:
    # Skip faststream's JSON decoding: the pipeline validates the bytes itself so that a bad
    # message can be dead-lettered instead of failing the whole batch.
    return list(msg.body)


def _consumer_config(max_ack_pending: int) -> ConsumerConfig:
    return ConsumerConfig(
        ack_wait=ACK_WAIT_SECONDS,
        backoff=list(REDELIVERY_BACKOFF_SECONDS),
        max_deliver=MAX_DELIVER,
        max_ack_pending=max_ack_pending,
    )


def _declare_checks(broker: NatsBroker, settings: Settings, checks: BatchHandler | None) -> None:
    batch = settings.recorder_batch_size

    @broker.subscriber(
        CHECK_SUBJECTS,
        stream=JStream(CHECKS_STREAM, declare=False),
        durable=CHECKS_CONSUMER,
        config=checks_consumer_config(settings),
        pull_sub=PullSub(batch_size=batch, timeout=BATCH_TIMEOUT_SECONDS, batch=True),
        ack_policy=AckPolicy.MANUAL,
        decoder=_raw_bodies,
        title="recorder:checks",
        description=(
            "Stores every check result in watch_server_logs (one row per check) and "
            "api_response_times (one row per endpoint call), in batches, idempotent on "
            "checkId. Malformed messages go to watch.dlq.recorder."
        ),
    )
    async def on_checks(
        body: SkipValidation[list[CheckCompleted]],
        message: Annotated[NatsBatchMessage, Context("message")],
    ) -> None:
        if checks is None:
            raise RuntimeError("this broker was built for its specification only")
        await checks.handle(message.raw_message)


def checks_consumer_config(settings: Settings) -> ConsumerConfig:
    """The checks consumer's settings (declared for the spec, created by the pull loop)."""
    return _consumer_config(max_ack_pending=max(settings.recorder_batch_size * 8, 1000))


def build_broker(
    settings: Settings,
    *,
    checks: BatchHandler | None = None,
    services: BatchHandler | None = None,
    include_checks: bool = True,
) -> NatsBroker:
    """The recorder's broker, not connected; handlers are None when only the spec is wanted.

    The running service passes include_checks=False: its checks consumer runs on
    shared.jetstream_pull.
    """
    broker = NatsBroker(
        settings.nats_url.split(","),
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        # Through the service's own log format (and level) instead of faststream's handler.
        logger=logging.getLogger("faststream.recorder"),
    )
    if include_checks:
        _declare_checks(broker, settings, checks)

    @broker.subscriber(
        SERVICE_SUBJECTS,
        stream=JStream(SERVICES_STREAM, declare=False),
        durable=SERVICES_CONSUMER,
        config=_consumer_config(max_ack_pending=1000),
        pull_sub=PullSub(batch_size=SERVICES_BATCH_SIZE, timeout=BATCH_TIMEOUT_SECONDS, batch=True),
        ack_policy=AckPolicy.MANUAL,
        decoder=_raw_bodies,
        title="recorder:services",
        description=(
            "Registers the catalog in the services table: existing services updated, new "
            "ones created, `active: false` marks a removed one inactive. A definition older "
            "than the stored one is ignored."
        ),
    )
    async def on_services(
        body: SkipValidation[list[ServiceDefined]],
        message: Annotated[NatsBatchMessage, Context("message")],
    ) -> None:
        if services is None:
            raise RuntimeError("this broker was built for its specification only")
        await services.handle(message.raw_message)

    broker.publisher(
        DLQ_RECORDER_SUBJECT,
        stream=JStream(DLQ_STREAM, declare=False),
        schema=bytes,
        title="recorder:dead-letters",
        description=(
            "Messages the recorder cannot record, with their original bytes unchanged and "
            "headers Watch-Dlq-Reason, Watch-Dlq-Subject and Watch-Dlq-Consumer "
            "(`recorder` or `recorder-services`). Nats-Msg-Id is `<consumer>-<stream seq>`."
        ),
    )
    return broker
