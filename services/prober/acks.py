"""JetStream publishes whose acks come back on one wildcard inbox the prober owns.

nats-py's `publish_async` does the same wire work, but per message it also waits on a
semaphore through `wait_for`, draws a NUID and random token bytes, makes a future with a
done callback and parses the PubAck into a dataclass; its `publish` builds each header block
from a dict; and each ack it receives becomes a `Msg` queued for a task. Here a whole batch
is encoded into one buffer of HPUB commands (reply subjects `<inbox>.<counter>`, the
`Nats-Msg-Id` and `Nats-Expected-Stream` headers) and handed to the client's writer at once;
the acks are taken from the protocol reader as they are parsed (shared.nats_direct), each
settles its slot in the batch, the last one wakes the batch's single waiter, and only an
error ack is parsed. The stream acks a message only once it is stored (or found to be a
duplicate of its `Nats-Msg-Id`), so an ack means stored, exactly as with `publish_async`.
While the client is not connected a batch fails at once (the publisher keeps it and retries
after the reconnect) instead of filling nats-py's reconnect buffer.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from typing import Any, Protocol

from nats.aio.client import Client
from nats.errors import ConnectionClosedError, MaxPayloadError
from nats.js.errors import APIError, NoStreamResponseError

from shared import nats_direct

_STATUS_LINE = b"NATS/1.0 "
_NO_RESPONDERS = b"503"


class Message(Protocol):
    """What is published: subject, payload and the id JetStream deduplicates on."""

    @property
    def subject(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def msg_id(self) -> str: ...


class _Batch:
    """Outcomes of one batch; `done` resolves when the last ack came."""

    __slots__ = ("done", "outcomes", "waiting")

    def __init__(self, size: int, done: asyncio.Future[None]) -> None:
        self.done = done
        self.outcomes: list[BaseException | None] = [None] * size
        self.waiting = 0

    def settle(self, index: int, outcome: BaseException | None) -> None:
        self.outcomes[index] = outcome
        self.waiting -= 1
        if not self.waiting and not self.done.done():
            self.done.set_result(None)


class AckInbox:
    """Sends batches to one stream and reports, per message, whether the stream stored it."""

    def __init__(self, *, nc: Client, stream: str) -> None:
        self._nc = nc
        self._stream = stream.encode()
        self._prefix = b""
        self._tokens = itertools.count()
        self._pending: dict[int, tuple[_Batch, int]] = {}
        self._sid: int | None = None

    async def start(self) -> None:
        """Subscribe to the inbox (nats-py subscribes again by itself after a reconnect)."""
        prefix = f"{self._nc.new_inbox()}."
        sub = await self._nc.subscribe(f"{prefix}*")
        self._prefix = prefix.encode()
        self._sid = sub._id
        nats_direct.route(self._nc, sub._id, self._on_ack)

    @property
    def pending(self) -> int:
        """Messages sent and still waiting for their ack."""
        return len(self._pending)

    async def publish(
        self, messages: Sequence[Message], *, ack_wait: float
    ) -> list[BaseException | None]:
        """Send `messages`, wait up to `ack_wait` s for their acks: None (stored) or the error."""
        nc = self._nc
        if self._sid is None:
            raise ConnectionError("ack inbox not started")
        if nc.is_closed:
            raise ConnectionClosedError
        if not nc.is_connected:
            raise ConnectionError("not connected to NATS")
        batch = _Batch(len(messages), asyncio.get_running_loop().create_future())
        tokens: list[int] = []
        commands: list[bytes] = []
        pending, prefix, stream = self._pending, self._prefix, self._stream
        max_payload, size = nc.max_payload, 0
        for index, m in enumerate(messages):
            payload = m.payload
            if len(payload) > max_payload:
                batch.outcomes[index] = MaxPayloadError()
                continue
            token = next(self._tokens)
            header = b"NATS/1.0\r\nNats-Msg-Id: %s\r\nNats-Expected-Stream: %s\r\n\r\n" % (
                m.msg_id.encode(),
                stream,
            )
            commands.append(
                b"HPUB %s %s%d %d %d\r\n%s%s\r\n"
                % (
                    m.subject.encode(),
                    prefix,
                    token,
                    len(header),
                    len(header) + len(payload),
                    header,
                    payload,
                )
            )
            size += len(payload)
            pending[token] = (batch, index)
            tokens.append(token)
        batch.waiting = len(tokens)
        if commands:
            nc.stats["out_msgs"] += len(commands)
            nc.stats["out_bytes"] += size
            try:
                await nc._send_command(b"".join(commands))
                await nc._flush_pending()
            except Exception as exc:
                for token in tokens:
                    entry = pending.pop(token, None)
                    if entry is not None:
                        batch.outcomes[entry[1]] = exc
                return batch.outcomes
        if batch.waiting:
            try:
                async with asyncio.timeout(ack_wait):
                    await batch.done
            except TimeoutError:
                late = TimeoutError(f"no ack within {ack_wait:g}s")
                for token in tokens:
                    entry = pending.pop(token, None)
                    if entry is not None:
                        batch.outcomes[entry[1]] = late
            finally:
                if batch.waiting:  # timed out or cancelled: a later ack must find nothing
                    for token in tokens:
                        pending.pop(token, None)
        return batch.outcomes

    def _on_ack(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        try:
            token = int(subject[len(self._prefix) :])
        except ValueError:
            return  # not one of ours
        entry = self._pending.pop(token, None)
        if entry is None:
            return  # its batch gave up waiting: the retry has its own token
        if not data:  # a status message, not a PubAck: never count it as stored
            status = _status(headers)
            entry[0].settle(
                entry[1],
                NoStreamResponseError()
                if status == _NO_RESPONDERS
                else APIError(description=f"no PubAck (status {status.decode(errors='replace')})"),
            )
        elif b'"error"' in data:
            entry[0].settle(entry[1], _api_error(data))
        else:
            entry[0].settle(entry[1], None)


def _status(headers: bytes | None) -> bytes:
    """The code of a status header block (`NATS/1.0 503\r\n...`), or b"none"."""
    if not headers or not headers.startswith(_STATUS_LINE):
        return b"none"
    return headers[len(_STATUS_LINE) :].split(b"\r\n", 1)[0].strip().split(b" ", 1)[0]


def _api_error(data: bytes) -> Exception:
    try:
        error: Any = json.loads(data).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        try:
            APIError.from_error(error)  # raises the subclass for the code (503, 404, ...)
        except APIError as exc:
            return exc
        except (KeyError, TypeError):  # an error object of an unknown shape
            pass
    return APIError(description=f"unexpected ack: {data[:200]!r}")
