"""The batch handler: validate, dead-letter the malformed, apply once, commit, then ack.

Failures while applying a batch:
    transient (PostgreSQL unreachable, restarting, timed out)
        -> keep the batch, tell JetStream we are still working on it, retry with backoff
    conflict with a replica (deadlock, serialization failure)
        -> retry at once
    anything else
        -> NAK with a delay; on the last allowed delivery, dead-letter the messages
Nothing is acked before the transaction that counted it has committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import asyncpg
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError

from services.aggregator.metrics import AggregatorMetrics
from services.aggregator.rollups import day_of, is_well_formed
from services.aggregator.store import Applied, RollupStore
from shared.events import (
    DLQ_CONSUMER_HEADER,
    DLQ_REASON_HEADER,
    DLQ_STREAM,
    DLQ_SUBJECT,
    DLQ_SUBJECT_HEADER,
    CheckCompleted,
)
from shared.logs import get_log
from shared.settings import Settings

log = get_log(__name__)

CONSUMER = "aggregator"
MAX_DELIVER = 50
NAK_DELAY_SECONDS = 10.0
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
)


class Batch(Protocol):
    """A pulled batch: its raw JetStream messages, and a way to say it is still in work."""

    @property
    def raw_message(self) -> Sequence[Msg]: ...

    async def in_progress(self) -> None: ...


class PulledBatch:
    """A Batch over messages from the pull loop."""

    def __init__(self, msgs: Sequence[Msg]) -> None:
        self._msgs = list(msgs)

    @property
    def raw_message(self) -> Sequence[Msg]:
        return self._msgs

    async def in_progress(self) -> None:
        for msg in self._msgs:
            if not msg._ackd:
                await msg.in_progress()


class DbHealth:
    """Whether PostgreSQL answered last time; logs once per change of state."""

    def __init__(self) -> None:
        self.ok: bool | None = None

    def up(self) -> None:
        if self.ok is False:
            log.info("database_up")
        self.ok = True

    def down(self, exc: BaseException) -> None:
        if self.ok is not False:
            log.error("database_down", error=type(exc).__name__, detail=str(exc)[:200])
        self.ok = False


def dlq_reason(exc: ValidationError | ValueError) -> str:
    """A one-line reason for the dead-letter header."""
    if isinstance(exc, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        ]
        text = "invalid CheckCompleted: " + "; ".join(parts)
    else:
        text = str(exc)
    return " ".join(text.split())[:500]  # headers are single lines


class CheckConsumer:
    """Applies batches of `CheckCompleted` to the rollups with an exactly-once effect."""

    def __init__(
        self,
        *,
        store: RollupStore,
        js: JetStreamContext,
        metrics: AggregatorMetrics,
        health: DbHealth,
        settings: Settings,
        on_events: asyncio.Event,
        apply_timeout: float = 30.0,
    ) -> None:
        self._store = store
        self._js = js
        self._metrics = metrics
        self._health = health
        self._settings = settings
        self._on_events = on_events
        self._apply_timeout = apply_timeout
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Give up a batch that is waiting for PostgreSQL (it stays unacked)."""
        self._stopping.set()

    async def handle(self, message: Batch) -> None:
        """Apply one pulled batch."""
        started = time.perf_counter()
        raws: list[Msg] = list(message.raw_message)
        cutoff = datetime.now(UTC).date() - timedelta(days=self._settings.retention_days)
        valid: list[tuple[Msg, CheckCompleted]] = []
        expired: list[Msg] = []
        dead = 0
        for raw in raws:
            try:
                check = CheckCompleted.model_validate_json(raw.data)
                problem = is_well_formed(check)
                if problem:
                    raise ValueError(problem)
            except (ValidationError, ValueError) as exc:
                dead += await self._dead_letter(raw, dlq_reason(exc))
                continue
            if day_of(check.started_at) < cutoff:
                expired.append(raw)
            else:
                valid.append((raw, check))

        result = Applied()
        if valid:
            applied = await self._apply(message, [c for _, c in valid])
            if applied is None:
                return
            result = applied
        for raw in [r for r, _ in valid] + expired:
            await _ack(raw)

        m = self._metrics
        m.checks_applied.inc(len(result.applied))
        m.duplicates_skipped.inc(result.duplicates)
        m.expired.inc(len(expired))
        m.batch_seconds.observe(time.perf_counter() - started)
        if result.applied:
            newest = max(c.started_at for c in result.applied)
            m.lag_seconds.observe(max(0.0, (datetime.now(UTC) - newest).total_seconds()))
        if result.events:
            self._on_events.set()
        log.info(
            "batch",
            messages=len(raws),
            applied=len(result.applied),
            duplicates=result.duplicates,
            expired=len(expired),
            dead_lettered=dead,
            events=len(result.events),
            ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def _apply(self, message: Batch, checks: list[CheckCompleted]) -> Applied | None:
        """Apply until committed; None when the batch was given back to JetStream."""
        delay, conflicts, partition_retries = 0.2, 0, 0
        while True:
            try:
                await self._store.ensure_days({day_of(c.started_at) for c in checks})
                async with asyncio.timeout(self._apply_timeout):
                    result = await self._store.apply(checks, now=datetime.now(UTC))
                self._health.up()
                return result
            except asyncpg.exceptions.TransactionRollbackError as exc:
                conflicts += 1
                log.warning("batch_conflict", error=type(exc).__name__, attempt=conflicts)
                await asyncio.sleep(random.uniform(0, min(1.0, 0.05 * conflicts)))
            except asyncpg.exceptions.CheckViolationError:
                # Most likely a partition dropped or never created behind the cache's back.
                if partition_retries >= 2:
                    await self._give_back(message, checks)
                    return None
                partition_retries += 1
                self._store.forget_partitions()
            except TRANSIENT_ERRORS as exc:
                self._health.down(exc)
                if self._stopping.is_set():
                    return None
                with contextlib.suppress(Exception):
                    await message.in_progress()  # a long outage must not burn deliveries
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                await self._give_back(message, checks)
                return None

    async def _give_back(self, message: Batch, checks: list[CheckCompleted]) -> None:
        log.error("batch_failed", exc=True, checks=len(checks))
        for raw in message.raw_message:
            if raw._ackd:
                continue
            if raw.metadata.num_delivered >= MAX_DELIVER:
                await self._dead_letter(
                    raw, "failed to apply on every delivery; see aggregator logs"
                )
            else:
                with contextlib.suppress(Exception):
                    await raw.nak(delay=NAK_DELAY_SECONDS)

    async def _dead_letter(self, raw: Msg, reason: str) -> int:
        """Publish the original bytes to the dead-letter subject, then ack; 1 when done."""
        digest = hashlib.sha256(raw.data).hexdigest()[:16]
        headers = {
            DLQ_REASON_HEADER: reason,
            DLQ_SUBJECT_HEADER: raw.subject,
            DLQ_CONSUMER_HEADER: CONSUMER,
            "Nats-Msg-Id": f"dlq-{CONSUMER}-{raw.metadata.sequence.stream}-{digest}",
        }
        try:
            await self._js.publish(
                DLQ_SUBJECT.format(consumer=CONSUMER),
                raw.data,
                headers=headers,
                stream=DLQ_STREAM,
                timeout=5.0,
            )
        except Exception as exc:  # left unacked: JetStream redelivers it later
            log.error("dead_letter_failed", subject=raw.subject, error=type(exc).__name__)
            return 0
        await _ack(raw)
        self._metrics.dlq.inc()
        log.warning("dead_letter", subject=raw.subject, reason=reason)
        return 1


async def _ack(raw: Msg) -> None:
    # A lost ack only means a redelivery, which the applied-checks table absorbs.
    with contextlib.suppress(Exception):
        await raw.ack()
