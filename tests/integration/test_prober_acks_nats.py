"""The prober's own JetStream acks: stored means acked, retries dedup, errors are errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.js.errors import NoStreamResponseError

from services.prober.acks import AckInbox
from services.prober.publish import Outgoing
from shared.events import CHECKS_STREAM
from shared.settings import Settings
from shared.streams import ensure_streams


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    conn = await nats.connect(nats_url)
    await ensure_streams(conn.jetstream(), Settings(nats_url=nats_url))
    yield conn
    await conn.close()


async def test_acked_messages_are_stored_once_per_message_id(nc: Client) -> None:
    acks = AckInbox(nc=nc, stream=CHECKS_STREAM)
    await acks.start()
    batch = [
        Outgoing(seq=i, subject="watch.check.a", payload=f"{i}".encode(), msg_id=f"id-{i % 3}")
        for i in range(6)
    ]
    assert await acks.publish(batch, ack_wait=10) == [None] * 6  # duplicates are acked too
    info = await nc.jetstream().stream_info(CHECKS_STREAM)
    assert info.state.messages == 3
    stored = await nc.jetstream().get_msg(CHECKS_STREAM, info.state.first_seq)
    assert (stored.data, (stored.headers or {}).get("Nats-Msg-Id")) == (b"0", "id-0")
    assert acks.pending == 0


async def test_a_subject_no_stream_takes_fails(nc: Client) -> None:
    acks = AckInbox(nc=nc, stream=CHECKS_STREAM)
    await acks.start()
    lost = Outgoing(seq=0, subject="nobody.listens.here", payload=b"x", msg_id="lost")
    [outcome] = await acks.publish([lost], ack_wait=10)
    assert isinstance(outcome, NoStreamResponseError)
