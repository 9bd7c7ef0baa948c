"""Assembles the aggregator: database, broker, consumer, outbox relay, maintenance, ops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
from faststream.nats import NatsBroker
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from services.aggregator.broker import build_broker, checks_consumer_config
from services.aggregator.consumer import (
    CONSUMER,
    TRANSIENT_ERRORS,
    CheckConsumer,
    DbHealth,
    PulledBatch,
)
from services.aggregator.metrics import AggregatorMetrics
from services.aggregator.outbox import OutboxRelay
from services.aggregator.store import RollupStore
from shared import db
from shared.backlog import sample_forever
from shared.events import CHECK_SUBJECTS, CHECKS_STREAM
from shared.jetstream_pull import PullLoop, ensure_consumer
from shared.logs import get_log
from shared.ops import OpsServer
from shared.settings import Settings
from shared.streams import ensure_streams

log = get_log(__name__)

DEFAULT_OPS_PORT = 9103
RELAY_INTERVAL_SECONDS = 5.0
MAINTENANCE_INTERVAL_SECONDS = 3600.0
FINAL_RELAY_SECONDS = 5.0
BACKLOG_INTERVAL_SECONDS = 5.0
STOP_SECONDS = 30.0


class Aggregator:
    """The aggregator service, startable in-process: `await start()`, then `await stop()`."""

    def __init__(self, *, settings: Settings) -> None:
        self.settings = settings
        self.metrics = AggregatorMetrics()
        self.health = DbHealth()
        port = settings.ops_port if settings.ops_port is not None else DEFAULT_OPS_PORT
        self.ops = OpsServer(
            service="aggregator",
            host=settings.ops_host,
            port=port,
            ready=self._ready,
            registry=self.metrics.registry,
        )
        self._events_pending = asyncio.Event()
        self._pool: asyncpg.Pool | None = None
        self._broker: NatsBroker | None = None
        self._nc: NatsClient | None = None
        self._consumer: CheckConsumer | None = None
        self._pull: PullLoop | None = None
        self._relay: OutboxRelay | None = None
        self._store: RollupStore | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._consuming = False
        self._consuming_started = False

    async def _ready(self) -> dict[str, object]:
        nats_ok = bool(self._nc is not None and self._nc.is_connected)
        database = bool(self.health.ok)
        return {
            "ready": self._consuming and nats_ok and database,
            "database": database,
            "nats": nats_ok,
            "consuming": self._consuming,
        }

    async def start(self) -> None:
        """Migrate, declare streams, relay pending events, then consume."""
        await self.ops.start()
        self._pool = await self._open_database()
        self._store = RollupStore(pool=self._pool, settings=self.settings)
        self._broker = build_broker(self.settings, include_checks=False)
        nc = self._nc = await self._broker.connect()
        js = nc.jetstream()
        await ensure_streams(js, self.settings)
        await ensure_consumer(
            js,
            stream=CHECKS_STREAM,
            durable=CONSUMER,
            subjects=CHECK_SUBJECTS,
            config=checks_consumer_config(self.settings),
        )
        self._relay = OutboxRelay(store=self._store, js=js, metrics=self.metrics)
        self._consumer = CheckConsumer(
            store=self._store,
            js=js,
            metrics=self.metrics,
            health=self.health,
            settings=self.settings,
            on_events=self._events_pending,
        )
        await self._maintain()
        await self._flush()
        await self._broker.start()
        self._pull = PullLoop(
            nc=nc,
            stream=CHECKS_STREAM,
            durable=CONSUMER,
            handler=self._on_batch,
            batch=self.settings.aggregator_batch_size,
            # One batch at a time: status transitions are decided in stream order.
            workers=1,
        )
        self._pull.start()
        self._consuming = self._consuming_started = True
        self._tasks = [
            asyncio.create_task(self._relay_loop(), name="aggregator-relay"),
            asyncio.create_task(self._maintenance_loop(), name="aggregator-maintenance"),
            asyncio.create_task(
                sample_forever(
                    js=js,
                    stream=CHECKS_STREAM,
                    durable=CONSUMER,
                    subjects=CHECK_SUBJECTS,
                    gauges=self.metrics.backlog,
                    interval=BACKLOG_INTERVAL_SECONDS,
                ),
                name="aggregator-backlog",
            ),
        ]
        log.info("started", ops_port=self.ops.port, batch_size=self.settings.aggregator_batch_size)

    async def stop(self) -> None:
        """Finish or give back the batch in hand, relay what committed, close everything."""
        self._consuming = False
        if self._consumer is not None:
            self._consumer.stop()
        if self._broker is not None:
            if self._consuming_started and self._pull is not None:
                # Waits for the batches in flight (a batch waiting for PostgreSQL gives up).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._pull.stop(), STOP_SECONDS)
                # Events the last batches decided go out now, not at the next start.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._flush(), FINAL_RELAY_SECONDS)
            await self._broker.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        await self.ops.stop()
        log.info("stopped")

    async def _on_batch(self, msgs: Sequence[Msg]) -> None:
        assert self._consumer is not None
        await self._consumer.handle(PulledBatch(msgs))

    async def _open_database(self) -> asyncpg.Pool:
        """Apply migrations and open the pool, retrying while PostgreSQL is unreachable."""
        delay = 0.5
        while True:
            try:
                conn = await asyncpg.connect(self.settings.database_url, timeout=10)
                try:
                    applied = await db.migrate(conn)
                finally:
                    await conn.close()
                if applied:
                    log.info("migrated", versions=",".join(map(str, applied)))
                pool = await db.create_pool(self.settings.database_url, min_size=1, max_size=4)
                self.health.up()
                return pool
            except TRANSIENT_ERRORS as exc:
                self.health.down(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _flush(self) -> None:
        assert self._relay is not None
        try:
            await self._relay.flush()
        except TRANSIENT_ERRORS as exc:
            self.health.down(exc)
        except Exception as exc:  # NATS trouble: the rows stay in the outbox for the next try
            log.warning("relay_failed", error=type(exc).__name__, detail=str(exc)[:200])

    async def _maintain(self) -> None:
        assert self._store is not None
        try:
            done = await self._store.maintain(datetime.now(UTC).date())
        except TRANSIENT_ERRORS as exc:
            self.health.down(exc)
            return
        if done is not None:
            log.info("partitions", table="aggregator_applied", created=done[0], dropped=done[1])

    async def _relay_loop(self) -> None:
        """Relay after each batch that decided events, and periodically (also a health probe)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._events_pending.wait(), RELAY_INTERVAL_SECONDS)
            self._events_pending.clear()
            await self._flush()
            if self.health.ok is False and self._store is not None:
                with contextlib.suppress(*TRANSIENT_ERRORS):
                    await self._store.ping()
                    self.health.up()

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL_SECONDS)
            await self._maintain()
