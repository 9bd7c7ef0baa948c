"""How the prober reads JetStream acks: stored, refused by the stream, or no stream at all."""

from __future__ import annotations

import asyncio
from typing import Any

from nats.aio.msg import Msg
from nats.js.errors import APIError, NoStreamResponseError

from services.prober.acks import AckInbox
from services.prober.publish import Outgoing


class FakeNats:
    """Records publishes and answers each with the ack `answer` gives (None: no answer)."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.published: list[tuple[str, bytes, str, dict[str, str]]] = []
        self.inbox: AckInbox | None = None

    def new_inbox(self) -> str:
        return "_INBOX.test"

    async def subscribe(self, subject: str, cb: Any) -> object:
        assert subject == "_INBOX.test.*"
        return object()

    async def publish(
        self, subject: str, payload: bytes, reply: str, headers: dict[str, str]
    ) -> None:
        self.published.append((subject, payload, reply, headers))
        ack = self.answer(headers["Nats-Msg-Id"])
        if ack is not None and self.inbox is not None:
            data, ack_headers = ack
            msg = Msg(_client=None, subject=reply, data=data, headers=ack_headers)  # type: ignore[arg-type]
            asyncio.get_running_loop().call_soon(asyncio.ensure_future, self.inbox._on_ack(msg))


async def inbox(answer: Any) -> tuple[AckInbox, FakeNats]:
    nc = FakeNats(answer)
    acks = AckInbox(nc=nc, stream="WATCH_CHECKS")  # type: ignore[arg-type]
    nc.inbox = acks
    await acks.start()
    return acks, nc


def batch(*ids: str) -> list[Outgoing]:
    return [
        Outgoing(seq=i, subject="watch.check.a", payload=b"{}", msg_id=m) for i, m in enumerate(ids)
    ]


ERROR = b'{"error":{"code":400,"err_code":10060,"description":"expected stream does not match"}}'


async def test_each_message_has_its_id_the_stream_and_its_own_outcome() -> None:
    answers = {
        "stored": (b'{"stream":"WATCH_CHECKS","seq":7}', None),
        "duplicate": (b'{"stream":"WATCH_CHECKS","seq":7,"duplicate": true}', None),
        "refused": (ERROR, None),
        "no-stream": (b"", {"Status": "503"}),
        "other-status": (b"", {"Status": "408"}),  # not a PubAck: not stored
    }
    acks, nc = await inbox(answers.get)
    outcomes = await acks.publish(batch(*answers), ack_wait=5)
    assert outcomes[:2] == [None, None]
    assert isinstance(outcomes[2], APIError) and outcomes[2].err_code == 10060
    assert isinstance(outcomes[3], NoStreamResponseError)
    assert isinstance(outcomes[4], APIError)
    assert nc.published[0][3] == {
        "Nats-Msg-Id": "stored",
        "Nats-Expected-Stream": "WATCH_CHECKS",
    }
    assert len({reply for _, _, reply, _ in nc.published}) == 5 and acks.pending == 0


async def test_a_message_without_an_ack_times_out_and_a_late_ack_is_ignored() -> None:
    acks, nc = await inbox(lambda m: None if m == "lost" else (b'{"seq":1}', None))
    outcomes = await acks.publish(batch("ok", "lost"), ack_wait=0.05)
    assert outcomes[0] is None and isinstance(outcomes[1], TimeoutError)
    assert acks.pending == 0
    reply = nc.published[1][2]
    await acks._on_ack(Msg(_client=None, subject=reply, data=b'{"seq":2}'))  # type: ignore[arg-type]
    assert acks.pending == 0


async def test_a_failed_send_fails_only_that_message() -> None:
    acks, nc = await inbox(lambda m: (b'{"seq":1}', None))
    real = nc.publish

    async def flaky(subject: str, payload: bytes, reply: str, headers: dict[str, str]) -> None:
        if headers["Nats-Msg-Id"] == "bad":
            raise ConnectionError("nats: connection closed")
        await real(subject, payload, reply, headers)

    nc.publish = flaky  # type: ignore[method-assign]
    outcomes = await acks.publish(batch("a", "bad", "b"), ack_wait=5)
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], ConnectionError)
