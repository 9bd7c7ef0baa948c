"""The lean pull loop on a real JetStream: each message handed over once, acks batched, and
the connection's other subscriptions untouched by its hook."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig

from shared.events import CHECK_SUBJECTS, CHECKS_STREAM
from shared.jetstream_pull import PullLoop, _status, ack_all, ensure_consumer
from shared.settings import Settings
from shared.streams import ensure_streams
from tests.polling import eventually

DURABLE = "pull-test"


@asynccontextmanager
async def consumer(settings: Settings, config: ConsumerConfig) -> AsyncIterator[Client]:
    """A connection, the streams, and the test's durable pull consumer on WATCH_CHECKS."""
    nc = await nats.connect(settings.nats_url)
    try:
        await ensure_streams(nc.jetstream(), settings)
        await ensure_consumer(
            nc.jetstream(),
            stream=CHECKS_STREAM,
            durable=DURABLE,
            subjects=CHECK_SUBJECTS,
            config=config,
        )
        yield nc
    finally:
        await nc.close()


async def test_every_message_is_handed_over_once_and_acked_in_one_write(
    settings: Settings,
) -> None:
    async with consumer(settings, ConsumerConfig(ack_wait=30, max_ack_pending=10_000)) as nc:
        js = nc.jetstream()
        sent = {f"body-{i}".encode() for i in range(2_500)}
        for i, body in enumerate(sorted(sent)):
            await js.publish(f"watch.check.svc-{i % 3}", body, headers={"Nats-Msg-Id": f"m{i}"})
        seen: list[Msg] = []

        async def handle(msgs: Sequence[Msg]) -> None:
            seen.extend(msgs)
            await ack_all(msgs)

        pull = PullLoop(
            nc=nc, stream=CHECKS_STREAM, durable=DURABLE, handler=handle, batch=300, workers=3
        )
        # A plain subscription on the same connection still gets nats-py's full message.
        other = await nc.subscribe("plain.subject")
        pull.start()
        try:
            await eventually(lambda: asyncio.sleep(0, len(seen)), until=lambda n: n >= len(sent))
            info = await eventually(
                lambda: js.consumer_info(CHECKS_STREAM, DURABLE),
                until=lambda i: i.num_ack_pending == 0 and i.num_pending == 0,
                what="every message acked",
            )
            assert info.ack_floor.stream_seq == len(sent)
            await nc.publish("plain.subject", b"hello", headers={"X-Test": "yes"})
            plain = await other.next_msg(timeout=5)
            assert (plain.data, plain.headers) == (b"hello", {"X-Test": "yes"})
        finally:
            await pull.stop()
        assert len(seen) == len(sent) and {m.data for m in seen} == sent
        assert {m.metadata.sequence.stream for m in seen} == set(range(1, len(sent) + 1))
        assert all(m.subject.startswith("watch.check.svc-") and m.is_acked for m in seen)
        assert all(m.metadata.num_delivered == 1 for m in seen)


async def test_a_message_left_unacked_is_redelivered(settings: Settings) -> None:
    async with consumer(settings, ConsumerConfig(ack_wait=1.0)) as nc:
        js = nc.jetstream()
        for i in range(10):
            await js.publish("watch.check.svc-a", f"{i}".encode())
        deliveries: list[tuple[bytes, int]] = []

        async def handle(msgs: Sequence[Msg]) -> None:
            deliveries.extend((m.data, m.metadata.num_delivered) for m in msgs)
            # "3" is never acked (as after a crash before commit); the rest are.
            await ack_all([m for m in msgs if m.data != b"3"])

        pull = PullLoop(nc=nc, stream=CHECKS_STREAM, durable=DURABLE, handler=handle, batch=100)
        pull.start()
        try:
            await eventually(
                lambda: asyncio.sleep(0, deliveries),
                until=lambda d: (b"3", 2) in d,
                what="the unacked message delivered again",
            )
        finally:
            await pull.stop()
        assert sorted(d for d, n in deliveries if n == 1) == sorted(
            f"{i}".encode() for i in range(10)
        )
        assert {d for d, n in deliveries if n > 1} == {b"3"}


def test_status_lines_of_pull_responses() -> None:
    assert _status(b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 5\r\n\r\n") == (
        _status(b"NATS/1.0 408 Request Timeout\r\n\r\n")
    )
    status = _status(b"NATS/1.0 409 Consumer Deleted\r\n\r\n")
    assert (status.code, status.description) == ("409", "Consumer Deleted")
    assert _status(b"NATS/1.0 404\r\n\r\n").code == "404"
