"""JetStream publishes whose acks come back on one wildcard inbox the prober owns.

nats-py's `publish_async` does the same wire work, but per message it also waits on a
semaphore through `wait_for`, draws a NUID and random token bytes, makes a future with a
done callback and parses the PubAck into a dataclass; the publisher then waited on all those
futures. Here a whole batch is sent with reply subjects `<inbox>.<counter>`, each ack settles
its slot in the batch, the last one wakes the batch's single waiter, and only an error ack
is parsed. The stream acks a message only once it is stored (or found to be a duplicate of
its `Nats-Msg-Id`), so an ack means stored, exactly as with `publish_async`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from typing import Any, Protocol

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import APIError, NoStreamResponseError

_EXPECTED_STREAM = "Nats-Expected-Stream"
_MSG_ID = "Nats-Msg-Id"
_STATUS = "Status"
_NO_RESPONDERS = "503"


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
        self._stream = stream
        self._prefix = ""
        self._tokens = itertools.count()
        self._pending: dict[str, tuple[_Batch, int]] = {}
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Subscribe to the inbox (nats-py subscribes again by itself after a reconnect)."""
        self._prefix = f"{self._nc.new_inbox()}."
        self._sub = await self._nc.subscribe(f"{self._prefix}*", cb=self._on_ack)

    @property
    def pending(self) -> int:
        """Messages sent and still waiting for their ack."""
        return len(self._pending)

    async def publish(
        self, messages: Sequence[Message], *, ack_wait: float
    ) -> list[BaseException | None]:
        """Send `messages`, wait up to `ack_wait` s for their acks: None (stored) or the error."""
        if self._sub is None:
            raise ConnectionError("ack inbox not started")
        batch = _Batch(len(messages), asyncio.get_running_loop().create_future())
        tokens: list[str] = []
        pending, prefix, publish = self._pending, self._prefix, self._nc.publish
        for index, m in enumerate(messages):
            token = str(next(self._tokens))
            headers = {_MSG_ID: m.msg_id, _EXPECTED_STREAM: self._stream}
            try:
                await publish(m.subject, m.payload, reply=prefix + token, headers=headers)
            except Exception as exc:
                batch.outcomes[index] = exc
                continue
            pending[token] = (batch, index)
            tokens.append(token)
            batch.waiting += 1
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

    async def _on_ack(self, msg: Msg) -> None:
        entry = self._pending.pop(msg.subject[len(self._prefix) :], None)
        if entry is None:
            return  # its batch gave up waiting: the retry has its own token
        data = msg.data
        if not data:  # a status message, not a PubAck: never count it as stored
            status = msg.headers.get(_STATUS) if msg.headers else None
            entry[0].settle(
                entry[1],
                NoStreamResponseError()
                if status == _NO_RESPONDERS
                else APIError(description=f"no PubAck (status {status})"),
            )
        elif b'"error"' in data:
            entry[0].settle(entry[1], _api_error(data))
        else:
            entry[0].settle(entry[1], None)


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
