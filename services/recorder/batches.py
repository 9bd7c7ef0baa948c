"""One consumed batch, from raw JetStream messages to acks: decode, dead-letter, store, ack.

The rules that keep every message accounted for:
- a malformed message goes to the dead-letter subject with its original bytes, then is acked;
- a batch is acked only after its transaction committed (a redelivery is a harmless duplicate);
- while the database is away the batch is held and retried with growing pauses (no NAK, so
  the delivery count does not climb), with in-progress acks so JetStream does not redeliver
  it elsewhere meanwhile; on shutdown it is NAKed for another replica;
- a batch the database refuses for a non-transient reason is retried one message at a time,
  and only the refused messages are dead-lettered, with the database error as the reason;
- any other error (a bug) leaves the batch unacked: JetStream redelivers it after ack_wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from services.recorder.dbhealth import DbHealth
from services.recorder.decode import Expired, Rejected
from services.recorder.metrics import RecorderMetrics
from services.recorder.storage import is_refusal, is_transient
from shared.events import DLQ_CONSUMER_HEADER, DLQ_REASON_HEADER, DLQ_SUBJECT_HEADER
from shared.logs import get_log

log = get_log(__name__)

T = TypeVar("T")


class Delivery(Protocol):
    """The parts of a nats-py JetStream message the pipeline uses."""

    data: bytes
    subject: str

    @property
    def metadata(self) -> Any: ...

    async def ack(self) -> None: ...

    async def nak(self, delay: float | None = None) -> None: ...

    async def in_progress(self) -> None: ...


Publish = Callable[[bytes, dict[str, str]], Awaitable[object]]
AckMany = Callable[[Sequence[Any]], Awaitable[None]]


def _header(text: str) -> str:
    # Header values are one line of printable text.
    return " ".join(text.split())[:1000]


class DeadLetters:
    """Publishes a message's original bytes to the dead-letter subject, with the reason."""

    def __init__(self, *, publish: Publish, consumer: str, metrics: RecorderMetrics) -> None:
        self._publish = publish
        self.consumer = consumer
        self._metrics = metrics

    async def send(self, msg: Delivery, rejected: Rejected) -> None:
        """Dead-letter one message; the message id makes a repeat after a crash a no-op."""
        seq = msg.metadata.sequence.stream
        headers = {
            DLQ_REASON_HEADER: _header(rejected.reason),
            DLQ_SUBJECT_HEADER: msg.subject,
            DLQ_CONSUMER_HEADER: self.consumer,
            "Nats-Msg-Id": f"{self.consumer}-{seq}",
        }
        await self._publish(msg.data, headers)
        self._metrics.dlq.labels(rejected.kind).inc()
        log.warning(
            "dead_letter",
            consumer=self.consumer,
            subject=msg.subject,
            seq=seq,
            kind=rejected.kind,
            reason=rejected.reason[:200],
        )


class Stopping(Exception):
    """The service is stopping while a batch waits for the database."""


class BatchPipeline(Generic[T]):
    """Handles the batches of one durable consumer; `decode` and `store` make it specific."""

    def __init__(
        self,
        *,
        decode: Callable[[bytes], T | Rejected | Expired],
        store: Callable[[Sequence[T]], Awaitable[None]],
        dead_letters: DeadLetters,
        health: DbHealth,
        metrics: RecorderMetrics,
        stopping: asyncio.Event,
        ack_many: AckMany | None = None,
        heartbeat_seconds: float = 10.0,
        backoff_start: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self._decode = decode
        self._store = store
        self._dlq = dead_letters
        self._health = health
        self._metrics = metrics
        self._stopping = stopping
        self._ack_many = ack_many  # acks a batch in one write (shared.jetstream_pull.ack_all)
        self._heartbeat_seconds = heartbeat_seconds
        self._backoff_start = backoff_start
        self._backoff_max = backoff_max
        self._in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()

    async def handle(self, msgs: Sequence[Delivery]) -> None:
        """Process one batch; every message ends acked, dead-lettered, or left for redelivery."""
        started = time.monotonic()
        self._in_flight += 1
        self.idle.clear()
        try:
            async with self._heartbeat(msgs):
                await self._handle(msgs)
        except Stopping:
            await _settle(msgs, lambda m: m.nak())
        except Exception as exc:  # never let faststream decide; JetStream redelivers later
            log.error(
                "batch_failed",
                consumer=self._dlq.consumer,
                size=len(msgs),
                exc=True,
                error=type(exc).__name__,
            )
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self.idle.set()
            self._metrics.batch_size.observe(len(msgs))
            self._metrics.batch_seconds.observe(time.monotonic() - started)

    async def _handle(self, msgs: Sequence[Delivery]) -> None:
        if self._stopping.is_set():
            raise Stopping
        pending: list[tuple[Delivery, T]] = []
        skipped: list[Delivery] = []
        decode = self._decode
        for msg in msgs:
            item = decode(msg.data)
            if isinstance(item, Rejected):
                await self._dlq.send(msg, item)
                await msg.ack()
            elif isinstance(item, Expired):
                self._metrics.expired.inc()
                skipped.append(msg)
            else:
                pending.append((msg, item))
        if skipped:
            await self._ack(skipped)
        if not pending:
            return
        try:
            await self._store_retrying([item for _, item in pending])
        except Exception as exc:
            if not is_refusal(exc):
                raise
            log.warning(
                "batch_refused",
                consumer=self._dlq.consumer,
                size=len(pending),
                error=type(exc).__name__,
                detail=str(exc)[:200],
            )
            await self._one_by_one(pending)
            return
        await self._ack([m for m, _ in pending])

    async def _ack(self, msgs: Sequence[Delivery]) -> None:
        """Ack committed (or skipped) messages; NATS trouble is logged, JetStream redelivers."""
        if self._ack_many is None:
            await _settle(msgs, lambda m: m.ack())
            return
        try:
            await self._ack_many(msgs)
        except Exception as exc:
            log.warning("settle_failed", count=len(msgs), error=type(exc).__name__)

    async def _one_by_one(self, pending: list[tuple[Delivery, T]]) -> None:
        # The rare path: find the message(s) the database refuses, store the rest.
        for msg, item in pending:
            try:
                await self._store_retrying([item])
            except Exception as exc:
                if not is_refusal(exc):
                    raise
                await self._dlq.send(msg, Rejected("database", f"{type(exc).__name__}: {exc}"))
            await msg.ack()

    async def _store_retrying(self, items: Sequence[T]) -> None:
        """Store, waiting out an unreachable database; other errors propagate."""
        delay = self._backoff_start
        while True:
            try:
                await self._store(items)
            except Exception as exc:
                if not is_transient(exc):
                    if is_refusal(exc):
                        self._health.mark_up()  # it answered, with a refusal
                    raise
                self._health.mark_down(exc)
            else:
                self._health.mark_up()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                raise Stopping
            delay = min(delay * 2, self._backoff_max)

    @contextlib.asynccontextmanager
    async def _heartbeat(self, msgs: Sequence[Delivery]) -> AsyncIterator[None]:
        """Tell JetStream the batch is still being worked on, so it is not redelivered."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(self._heartbeat_seconds)
                await _settle(msgs, lambda m: m.in_progress())

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _settle(msgs: Sequence[Delivery], action: Callable[[Delivery], Awaitable[None]]) -> None:
    """Apply ack/nak/in-progress to the messages not yet acked; NATS trouble is logged once."""
    failed = 0
    for msg in msgs:
        if getattr(msg, "_ackd", False):
            continue
        try:
            await action(msg)
        except Exception:
            failed += 1
    if failed:
        log.warning("settle_failed", count=failed)
