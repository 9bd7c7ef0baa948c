"""Getting results into JetStream even when NATS comes and goes.

Every result goes through a bounded in-memory buffer. One flusher publishes from its head in
order, in batches (at most one batch per LINGER, so a result waits up to LINGER for others
to join it): it sends a whole batch without waiting, then waits for the batch's JetStream
acks together (at 1,700 checks/s a request/reply round trip per message cost more CPU than
the check itself; services.prober.acks does the sending).
Whatever was not acked stays and is retried with the same
`Nats-Msg-Id` (the checkId), so the stream's dedup window makes retries safe. When the
buffer is full the OLDEST result is dropped, counted and logged: never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from services.prober.metrics import ProberMetrics
from shared.events import check_subject
from shared.logs import get_log

log = get_log(__name__)

Send = Callable[[list["Outgoing"], float], Awaitable[list[BaseException | None]]]
"""Send a batch to JetStream and wait up to the timeout for its acks: per message None
(stored) or what went wrong (services.prober.acks.AckInbox.publish)."""

BATCH = 2048  # sends that share one wait for their acks
LINGER = 0.02  # seconds between batches: a result may wait this long for others to join it
ACK_TIMEOUT = 5.0  # seconds to wait for a batch's acks before the rest is retried
MIN_BACKOFF, MAX_BACKOFF = 0.1, 5.0
DROP_LOG_EVERY = 10.0  # seconds between "buffer full" warnings while results keep dropping


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A serialized result waiting for its ack."""

    seq: int
    subject: str
    payload: bytes
    msg_id: str


class Result(Protocol):
    """A check to publish (services.prober.wire.Check, or shared.events.CheckCompleted)."""

    @property
    def check_id(self) -> UUID | str: ...
    @property
    def service_id(self) -> str: ...
    def to_wire(self) -> bytes: ...


class ResultPublisher:
    """Buffers results and publishes them in order until JetStream acks each one."""

    def __init__(
        self,
        *,
        send: Send,
        connected: Callable[[], bool],
        capacity: int,
        metrics: ProberMetrics,
    ) -> None:
        self._send = send
        self._connected = connected
        self._buffer: deque[Outgoing] = deque()
        self._capacity = capacity
        self._metrics = metrics
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing_since: float | None = None
        self._last_drop_log = 0.0
        self._drops_unlogged = 0
        self.dropped = 0
        self.published = 0
        metrics.buffer_depth.set_function(lambda: len(self._buffer))  # read when scraped

    @property
    def depth(self) -> int:
        """Results waiting to be published."""
        return len(self._buffer)

    def submit(self, result: Result) -> None:
        """Queue a result for publishing; never blocks, never raises."""
        if len(self._buffer) >= self._capacity:
            self._buffer.popleft()
            self._note_drop()
        self._buffer.append(
            Outgoing(
                seq=next(self._seq),
                subject=check_subject(result.service_id),
                payload=result.to_wire(),
                msg_id=str(result.check_id),
            )
        )
        self._wakeup.set()

    def start(self) -> None:
        """Start the flusher."""
        self._task = asyncio.create_task(self._run(), name="publish-results")

    def nudge(self) -> None:
        """Try again now (e.g. NATS just reconnected) instead of after the backoff."""
        self._wakeup.set()

    async def stop(self, *, grace: float) -> None:
        """Give the flusher `grace` seconds to empty the buffer, then stop it."""
        deadline = time.monotonic() + grace
        while self._buffer and self._connected() and time.monotonic() < deadline:
            self._wakeup.set()
            await asyncio.sleep(0.02)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._buffer:
            log.warning("results not published at shutdown", count=len(self._buffer))

    async def _run(self) -> None:
        backoff = MIN_BACKOFF
        loop = asyncio.get_running_loop()
        last_flush = -LINGER
        while True:
            if not self._buffer:
                self._wakeup.clear()
                await self._wakeup.wait()
            # Let a batch gather: at most one write and one wait for acks per LINGER, not
            # per result (per result, the sends and the event loop's wake-ups for each ack
            # cost more CPU than the checks), unless a whole batch is waiting already.
            wait = last_flush + LINGER - loop.time()
            if wait > 0 and len(self._buffer) < BATCH:
                await asyncio.sleep(wait)
            last_flush = loop.time()
            if self._connected() and await self._flush_batch():
                backoff = MIN_BACKOFF
                continue
            # Not connected, or a publish failed: wait, but wake early on reconnect.
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _flush_batch(self) -> bool:
        """Publish the head of the buffer; True when all of it was acked."""
        batch = list(itertools.islice(self._buffer, BATCH))
        try:
            outcomes = await self._send(batch, ACK_TIMEOUT)
        except Exception as exc:  # e.g. not connected: the whole batch stays
            outcomes = [exc] * len(batch)
        acked = {o.seq for o, r in zip(batch, outcomes, strict=True) if r is None}
        self._metrics.publish_batch.observe(len(batch))
        failed = len(batch) - len(acked)
        while self._buffer and self._buffer[0].seq in acked:
            self._buffer.popleft()
        if failed and acked:  # keep order, drop only what was stored
            self._buffer = deque(o for o in self._buffer if o.seq not in acked)
        self.published += len(acked)
        self._metrics.published.inc(len(acked))
        if failed:
            self._metrics.publish_failures.inc(failed)
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                error = next(r for r in outcomes if isinstance(r, BaseException))
                log.warning(
                    "publish failed, buffering",
                    failed=failed,
                    buffered=len(self._buffer),
                    error=f"{type(error).__name__}: {error}".strip(": "),
                )
            return False
        if self._failing_since is not None:
            log.info(
                "publish recovered",
                buffered=len(self._buffer),
                outage_s=round(time.monotonic() - self._failing_since, 1),
            )
            self._failing_since = None
        return True

    def _note_drop(self) -> None:
        self.dropped += 1
        self._drops_unlogged += 1
        self._metrics.buffer_dropped.inc()
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_EVERY:
            log.warning(
                "buffer full, dropped oldest results",
                dropped=self._drops_unlogged,
                dropped_total=self.dropped,
                capacity=self._capacity,
            )
            self._last_drop_log = now
            self._drops_unlogged = 0
