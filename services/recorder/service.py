"""The recorder assembled: database, broker, pipelines, partition maintenance, ops server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import cast

import asyncpg
from faststream.nats import NatsBroker

from services.recorder.batches import BatchPipeline, DeadLetters
from services.recorder.broker import (
    CHECKS_CONSUMER,
    DLQ_RECORDER_SUBJECT,
    SERVICES_CONSUMER,
    build_broker,
    checks_consumer_config,
)
from services.recorder.dbhealth import DbHealth
from services.recorder.decode import decode_check_fast, decode_service
from services.recorder.metrics import RecorderMetrics
from services.recorder.partitions import PartitionKeeper
from services.recorder.storage import (
    CatalogStore,
    PgCatalogStore,
    PgRawStore,
    RawStore,
    is_transient,
)
from services.recorder.wire import WireCheck
from shared.backlog import sample_forever
from shared.db import create_pool, migrate
from shared.events import (
    CHECK_SUBJECTS,
    CHECKS_STREAM,
    DLQ_STREAM,
    ServiceDefined,
)
from shared.jetstream import guard_fetch_timeouts
from shared.jetstream_pull import PullLoop, ack_all, ensure_consumer
from shared.logs import get_log
from shared.ops import OpsServer
from shared.settings import Settings
from shared.streams import ensure_streams

log = get_log(__name__)

DEFAULT_OPS_PORT = 9102
MAINTENANCE_SECONDS = 3600.0
DRAIN_SECONDS = 20.0
BACKLOG_SECONDS = 5.0
# Batches in work at once (each pulls, decodes, commits, acks): while one waits for
# PostgreSQL's commit another is decoded. Four kept this process busy in bench_ingest.py.
PULL_WORKERS = 4


class Recorder:
    """The recorder service: `await start()`, later `await stop()`."""

    def __init__(self, *, settings: Settings, maintenance_seconds: float = MAINTENANCE_SECONDS):
        self.settings = settings
        self.metrics = RecorderMetrics()
        self.health = DbHealth(gauge=self.metrics.db_up)
        self.partitions = PartitionKeeper(retention_days=settings.retention_days)
        self._maintenance_seconds = maintenance_seconds
        self._stopping = asyncio.Event()
        self.pool: asyncpg.Pool | None = None
        self.broker: NatsBroker | None = None
        self.pull: PullLoop | None = None
        self._backlog: asyncio.Task[None] | None = None
        self.ops: OpsServer | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._pipelines: list[BatchPipeline[object]] = []

    async def start(self) -> None:
        """Migrate (waiting for the database), declare streams, start consuming and serving."""
        s = self.settings
        self.ops = OpsServer(
            service="recorder",
            host=s.ops_host,
            port=DEFAULT_OPS_PORT if s.ops_port is None else s.ops_port,
            ready=self.ready,
            registry=self.metrics.registry,
        )
        await self.ops.start()
        await self._migrate()
        self.pool = await create_pool(s.database_url)
        raw = PgRawStore(pool=self.pool, partitions=self.partitions)
        catalog = PgCatalogStore(pool=self.pool)
        checks, services = self._pipeline_for_checks(raw), self._pipeline_for_services(catalog)
        # The checks consumer runs on the lean pull loop (shared.jetstream_pull); faststream
        # keeps the catalog consumer and the dead-letter publisher.
        self.broker = build_broker(s, services=services, include_checks=False)
        await self.broker.connect()
        js = self.broker.connection.jetstream()
        await ensure_streams(js, s)
        await ensure_consumer(
            js,
            stream=CHECKS_STREAM,
            durable=CHECKS_CONSUMER,
            subjects=CHECK_SUBJECTS,
            config=checks_consumer_config(s),
        )
        await self.maintain()
        self._maintenance = asyncio.create_task(self._maintenance_loop())
        await self.broker.start()
        guard_fetch_timeouts(self.broker)
        self.pull = PullLoop(
            nc=self.broker.connection,
            stream=CHECKS_STREAM,
            durable=CHECKS_CONSUMER,
            handler=checks.handle,
            batch=s.recorder_batch_size,
            workers=PULL_WORKERS,
        )
        self.pull.start()
        self._backlog = asyncio.create_task(
            sample_forever(
                js=js,
                stream=CHECKS_STREAM,
                durable=CHECKS_CONSUMER,
                subjects=CHECK_SUBJECTS,
                gauges=self.metrics.backlog,
                interval=BACKLOG_SECONDS,
            )
        )
        log.info("recorder_started", ops_port=self.ops.port, batch_size=s.recorder_batch_size)

    async def stop(self) -> None:
        """Finish the batches in hand (ack what committed), then close everything."""
        self._stopping.set()
        if self.pull is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.pull.stop(), DRAIN_SECONDS)
        if self._pipelines:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(p.idle.wait() for p in self._pipelines)), DRAIN_SECONDS
                )
        for task in (self._maintenance, self._backlog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.broker is not None:
            await self.broker.stop()
        if self.pool is not None:
            await self.pool.close()
        if self.ops is not None:
            await self.ops.stop()
        log.info("recorder_stopped")

    async def ready(self) -> dict[str, object]:
        """Ready while NATS is connected and PostgreSQL answers."""
        nats_ok = (
            self.broker is not None
            and self.broker.connection is not None
            and (self.broker.connection.is_connected)
        )
        db_ok = False
        if self.pool is not None:
            try:
                async with asyncio.timeout(2):
                    await self.pool.fetchval("SELECT 1")
                db_ok = True
                self.health.mark_up()
            except Exception as exc:
                if is_transient(exc):
                    self.health.mark_down(exc)
        return {"ready": nats_ok and db_ok, "nats": nats_ok, "database": db_ok}

    async def maintain(self) -> None:
        """One partition maintenance run (skipped when another replica holds the lock)."""
        assert self.pool is not None
        try:
            async with self.pool.acquire() as conn:
                done = await self.partitions.maintain(conn=cast(asyncpg.Connection, conn))
        except asyncpg.LockNotAvailableError:
            log.warning("partition_maintenance_postponed", reason="parent table busy")
            return
        except Exception as exc:
            if not is_transient(exc):
                raise
            self.health.mark_down(exc)
            return
        if done is not None:
            first, last = self.partitions.window()
            log.info(
                "partitions_maintained",
                created=done.created,
                dropped=done.dropped,
                first=first,
                last=last,
            )

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(self._maintenance_seconds)
            try:
                await self.maintain()
            except Exception:
                log.error("partition_maintenance_failed", exc=True)

    async def _migrate(self) -> None:
        """Apply migrations, retrying with backoff while the database is unreachable."""
        delay = 0.5
        while True:
            try:
                conn = await asyncpg.connect(self.settings.database_url)
                try:
                    applied = await migrate(conn)
                finally:
                    await conn.close()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self.health.mark_down(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            self.health.mark_up()
            if applied:
                log.info("migrations_applied", versions=",".join(map(str, applied)))
            return

    async def _publish_dlq(self, body: bytes, headers: dict[str, str]) -> None:
        assert self.broker is not None
        await self.broker.publish(body, DLQ_RECORDER_SUBJECT, headers=headers, stream=DLQ_STREAM)

    def _pipeline_for_checks(self, raw: RawStore) -> BatchPipeline[WireCheck]:
        async def store(checks: Sequence[WireCheck]) -> None:
            result = await raw.store(checks=checks)
            self.metrics.results_stored.inc(result.stored)
            self.metrics.duplicates.inc(result.duplicates)
            log.debug("batch_stored", stored=result.stored, duplicates=result.duplicates)

        pipeline = BatchPipeline[WireCheck](
            decode=lambda data: decode_check_fast(data, partitions=self.partitions),
            store=store,
            dead_letters=DeadLetters(
                publish=self._publish_dlq, consumer=CHECKS_CONSUMER, metrics=self.metrics
            ),
            health=self.health,
            metrics=self.metrics,
            stopping=self._stopping,
            ack_many=ack_all,  # the pull loop's messages: one write per batch of acks
        )
        self._pipelines.append(pipeline)  # type: ignore[arg-type]
        return pipeline

    def _pipeline_for_services(self, catalog: CatalogStore) -> BatchPipeline[ServiceDefined]:
        async def store(services: Sequence[ServiceDefined]) -> None:
            changed = await catalog.apply(services=services)
            self.metrics.services_applied.inc(changed)
            for s in services:
                log.info("service_defined", service=s.service_id, active=s.active)

        pipeline = BatchPipeline[ServiceDefined](
            decode=decode_service,
            store=store,
            dead_letters=DeadLetters(
                publish=self._publish_dlq, consumer=SERVICES_CONSUMER, metrics=self.metrics
            ),
            health=self.health,
            metrics=self.metrics,
            stopping=self._stopping,
        )
        self._pipelines.append(pipeline)  # type: ignore[arg-type]
        return pipeline
