"""Relays committed events from `event_outbox` to JetStream, then forgets them.

Each event carries `Nats-Msg-Id` = its msg_id, so a relay repeated after a crash between
publish and delete is dropped by JetStream's duplicate window.
"""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext

from services.aggregator.metrics import AggregatorMetrics
from services.aggregator.store import RollupStore
from shared.events import EVENTS_STREAM
from shared.logs import get_log

log = get_log(__name__)
PAGE = 500
_TYPES = (
    ("status-", "StatusChanged"),
    ("sla-breached-", "SlaBreached"),
    ("sla-recovered-", "SlaRecovered"),
)


def event_type(msg_id: str) -> str:
    """The event type an outbox msg_id stands for (for the metrics label)."""
    return next((name for prefix, name in _TYPES if msg_id.startswith(prefix)), "other")


class OutboxRelay:
    """Publishes the outbox in id order; one relay at a time across replicas."""

    def __init__(
        self,
        *,
        store: RollupStore,
        js: JetStreamContext,
        metrics: AggregatorMetrics,
        publish_timeout: float = 5.0,
    ) -> None:
        self._store = store
        self._js = js
        self._metrics = metrics
        self._timeout = publish_timeout
        self._lock = asyncio.Lock()

    async def flush(self) -> int:
        """Publish every pending event; return how many JetStream newly stored."""
        published = 0
        async with self._lock:
            while True:
                count, more = await self._flush_page()
                published += count
                if not more:
                    return published

    async def _flush_page(self) -> tuple[int, bool]:
        error: Exception | None = None
        stored = 0
        async with self._store.acquire() as conn, conn.transaction():
            await self._store.outbox_lock(conn)
            rows = await self._store.pending_events(conn, PAGE)
            done: list[int] = []
            for row in rows:
                try:
                    ack = await self._js.publish(
                        row.subject,
                        row.payload,
                        stream=EVENTS_STREAM,
                        timeout=self._timeout,
                        headers={"Nats-Msg-Id": row.msg_id},
                    )
                except Exception as exc:  # NATS trouble: keep the rest for the next flush
                    error = exc
                    break
                done.append(row.id)
                if not ack.duplicate:
                    stored += 1
                    kind = event_type(row.msg_id)
                    self._metrics.events_published.labels(type=kind).inc()
                    log.info("event", type=kind, subject=row.subject, msg_id=row.msg_id)
            # What JetStream acknowledged is forgotten even when a later publish failed.
            if done:
                await self._store.delete_events(conn, done)
        if error is not None:
            raise error
        return stored, len(rows) == PAGE
