"""How the prober writes a batch and reads JetStream acks: stored, refused, or no stream at all.

The fake client reads back the HPUB commands the inbox wrote (so the encoding is checked
the way nats-server would read it) and answers through nats-py's `_process_msg`, the method
shared.nats_direct routes from. tests/integration/test_prober_acks_nats.py does the same
against a real nats-server.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.js.errors import APIError, NoStreamResponseError

from services.prober.acks import AckInbox
from services.prober.publish import Outgoing

SID = 7


class FakeNats:
    """Parses what is written and answers each message with the ack `answer` gives."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.published: list[tuple[str, str, dict[str, str], bytes]] = []
        self.stats = {"in_msgs": 0, "in_bytes": 0, "out_msgs": 0, "out_bytes": 0}
        self.max_payload = 1024
        self.is_closed = False
        self.is_connected = True
        self._flush_queue = None
        self.fail_writes: Exception | None = None

    def new_inbox(self) -> str:
        return "_INBOX.test"

    async def subscribe(self, subject: str) -> Any:
        assert subject == "_INBOX.test.*"
        return type("Sub", (), {"_id": SID})()

    async def _process_msg(self, *args: Any) -> None:
        raise AssertionError("an ack went past the inbox's route")

    async def _flush_pending(self) -> None:
        return None

    async def _send_command(self, data: bytes) -> None:
        if self.fail_writes is not None:
            raise self.fail_writes
        while data:
            line, _, data = data.partition(b"\r\n")
            op, subject, reply, header_size, total = line.split(b" ")
            assert op == b"HPUB"
            block, data = data[: int(total)], data[int(total) + 2 :]
            header, payload = block[: int(header_size)], block[int(header_size) :]
            lines = header.decode().split("\r\n")
            assert lines[0] == "NATS/1.0" and lines[-2:] == ["", ""]
            headers = dict(h.split(": ", 1) for h in lines[1:-2])
            self.published.append((subject.decode(), reply.decode(), headers, payload))
            ack = self.answer(headers["Nats-Msg-Id"])
            if ack is not None:
                ack_data, ack_headers = ack
                asyncio.get_running_loop().call_soon(
                    asyncio.ensure_future,
                    self._process_msg(SID, reply, b"", ack_data, ack_headers),
                )


async def inbox(answer: Any) -> tuple[AckInbox, FakeNats]:
    nc = FakeNats(answer)
    acks = AckInbox(nc=nc, stream="WATCH_CHECKS")  # type: ignore[arg-type]
    await acks.start()
    return acks, nc


def batch(*ids: str, payload: bytes = b"{}") -> list[Outgoing]:
    return [
        Outgoing(seq=i, subject="watch.check.a", payload=payload, msg_id=m)
        for i, m in enumerate(ids)
    ]


ERROR = b'{"error":{"code":400,"err_code":10060,"description":"expected stream does not match"}}'


async def test_each_message_has_its_id_the_stream_and_its_own_outcome() -> None:
    answers = {
        "stored": (b'{"stream":"WATCH_CHECKS","seq":7}', None),
        "duplicate": (b'{"stream":"WATCH_CHECKS","seq":7,"duplicate": true}', None),
        "refused": (ERROR, None),
        "no-stream": (b"", b"NATS/1.0 503\r\n\r\n"),
        "other-status": (b"", b"NATS/1.0 408 Request Timeout\r\n\r\n"),  # not a PubAck
    }
    acks, nc = await inbox(answers.get)
    outcomes = await acks.publish(batch(*answers, payload=b'{"a": 1}'), ack_wait=5)
    assert outcomes[:2] == [None, None]
    assert isinstance(outcomes[2], APIError) and outcomes[2].err_code == 10060
    assert isinstance(outcomes[3], NoStreamResponseError)
    assert isinstance(outcomes[4], APIError) and "408" in str(outcomes[4])
    subject, _, headers, payload = nc.published[0]
    assert (subject, headers, payload) == (
        "watch.check.a",
        {"Nats-Msg-Id": "stored", "Nats-Expected-Stream": "WATCH_CHECKS"},
        b'{"a": 1}',
    )
    assert len({reply for _, reply, _, _ in nc.published}) == 5 and acks.pending == 0
    assert nc.stats["out_msgs"] == 5 and nc.stats["in_msgs"] == 5


async def test_a_message_without_an_ack_times_out_and_a_late_ack_is_ignored() -> None:
    acks, nc = await inbox(lambda m: None if m == "lost" else (b'{"seq":1}', None))
    outcomes = await acks.publish(batch("ok", "lost"), ack_wait=0.05)
    assert outcomes[0] is None and isinstance(outcomes[1], TimeoutError)
    assert acks.pending == 0
    reply = nc.published[1][1].encode()
    await nc._process_msg(SID, reply, b"", b'{"seq":2}', None)
    await nc._process_msg(SID, b"_INBOX.test.not-a-token", b"", b'{"seq":3}', None)
    assert acks.pending == 0


async def test_a_failed_write_fails_the_batch_and_leaves_nothing_waiting() -> None:
    acks, nc = await inbox(lambda m: (b'{"seq":1}', None))
    nc.fail_writes = ConnectionError("nats: connection closed")
    outcomes = await acks.publish(batch("a", "b"), ack_wait=5)
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    assert acks.pending == 0


async def test_too_large_a_message_fails_alone() -> None:
    acks, nc = await inbox(lambda m: (b'{"seq":1}', None))
    messages = [*batch("small"), Outgoing(seq=1, subject="s", payload=b"x" * 2000, msg_id="big")]
    outcomes = await acks.publish(messages, ack_wait=5)
    assert outcomes[0] is None and type(outcomes[1]).__name__ == "MaxPayloadError"
    assert [h["Nats-Msg-Id"] for _, _, h, _ in nc.published] == ["small"]


async def test_while_disconnected_a_batch_is_refused_before_anything_is_written() -> None:
    acks, nc = await inbox(lambda m: (b'{"seq":1}', None))
    nc.is_connected = False
    with pytest.raises(ConnectionError):
        await acks.publish(batch("a"), ack_wait=5)
    assert nc.published == [] and acks.pending == 0
