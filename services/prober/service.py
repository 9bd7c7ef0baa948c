"""The prober assembled: catalog, schedule, HTTP client, publisher, broker and ops endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import ssl
from datetime import UTC, datetime
from types import TracebackType

import aiohttp
import httpx
from faststream.nats import NatsBroker
from nats.aio.client import Client
from nats.js import JetStreamContext

from services.prober import wire
from services.prober.acks import AckInbox
from services.prober.broker import build_broker
from services.prober.catalog import Catalog, CatalogError, Service, load_catalog
from services.prober.cluster import ClusterSettings, Membership
from services.prober.definitions import publish_catalog
from services.prober.metrics import ProberMetrics
from services.prober.probe import RequestCache, probe_service
from services.prober.publish import Outgoing, ResultPublisher
from services.prober.reload import CatalogWatcher
from services.prober.schedule import Clock, Scheduler, wall_phase
from services.prober.timing import TimedConnector, TimedResolver
from services.prober.transport import AiohttpTransport, CookielessClient
from shared.events import (
    CHECKS_STREAM,
    CheckCompleted,
    CheckStatus,
    ProbeRunReply,
    ProbeRunRequest,
    Trigger,
)
from shared.logs import get_log
from shared.ops import OpsServer
from shared.settings import Settings
from shared.streams import ensure_streams

log = get_log(__name__)
_check_log = logging.getLogger(__name__)

CHECK_STATUSES: tuple[CheckStatus, ...] = ("up", "degraded", "down")

DEFAULT_OPS_PORT = 9101
CONNECT_WAIT = 5.0  # how long start() waits for NATS before monitoring goes on without it
MANUAL_RUNS = 4  # manual requests served at once
SHUTDOWN_GRACE = 5.0
# Idle connections are kept this long; aiohttp retries an idempotent request once when a
# server closed a kept-alive connection under it, so a long keep-alive costs no false alarms.
KEEPALIVE_SECONDS = 30.0


def make_client(
    settings: Settings, *, ssl_context: ssl.SSLContext | None = None
) -> httpx.AsyncClient:
    """The production HTTP client: httpx's API over aiohttp (far less CPU per request).

    One connection pool for every check, so services on the same host share kept-alive
    connections; the connector and resolver measure the phases (services.prober.timing).
    """
    limit = max(100, settings.prober_concurrency)
    context = ssl_context or httpx.create_ssl_context()

    def session() -> aiohttp.ClientSession:
        # Created on first use, inside the running loop.
        connector = TimedConnector(
            limit=limit,
            keepalive_timeout=KEEPALIVE_SECONDS,
            ssl=context,
            resolver=TimedResolver(),
        )
        # No cookie jar: one check's cookies must never change what the next check sees.
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    transport = AiohttpTransport(session=session)
    return CookielessClient(transport=transport, headers={"User-Agent": "watch-server-prober/0.1"})


class Prober:
    """The prober service, startable in-process: `async with Prober(settings=...) as p:`."""

    def __init__(
        self,
        *,
        settings: Settings,
        client: httpx.AsyncClient | None = None,
        catalog: Catalog | None = None,
        clock: Clock | None = None,
        cluster: ClusterSettings | None = None,
        watch_file: bool = True,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.metrics = ProberMetrics()
        self._client = client
        self._owns_client = client is None
        self._clock = clock
        self._semaphore = asyncio.Semaphore(settings.prober_concurrency)
        self._manual = asyncio.Semaphore(MANUAL_RUNS)
        self._broker: NatsBroker | None = None
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._acks: AckInbox | None = None
        self._streams_ready = False
        self._stopping = False
        self._connect_task: asyncio.Task[None] | None = None
        self._resync_task: asyncio.Task[None] | None = None
        self._scheduler: Scheduler | None = None
        self._reload_lock = asyncio.Lock()
        self._reload_task: asyncio.Task[bool] | None = None
        self._last_status: dict[str, CheckStatus] = {}
        self._requests: RequestCache | None = None
        self._counters = {s: self.metrics.checks.labels(s) for s in CHECK_STATUSES}
        # Only a catalog read from a file is watched (a test may pass one in).
        self._watcher = (
            CatalogWatcher(settings.services_file, on_change=lambda: self.reload(reason="file"))
            if watch_file and catalog is None
            else None
        )
        self.membership = (
            Membership(
                region=settings.region,
                prober_id=settings.prober_id,
                settings=cluster,
                on_change=self._share_moved,
            )
            if cluster is not None and cluster.sharding
            else None
        )
        self.publisher = ResultPublisher(
            send=self._send,
            connected=self._can_publish,
            capacity=settings.prober_buffer_size,
            metrics=self.metrics,
        )
        port = DEFAULT_OPS_PORT if settings.ops_port is None else settings.ops_port
        self.ops = OpsServer(
            service="prober",
            host=settings.ops_host,
            port=port,
            ready=self._readiness,
            registry=self.metrics.registry,
        )

    async def __aenter__(self) -> Prober:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def nats_connected(self) -> bool:
        """True while the NATS connection is up."""
        return self._nc is not None and self._nc.is_connected

    async def start(self) -> None:
        """Load the catalog (raises CatalogError), then monitor; NATS may come later."""
        if self.catalog is None:
            if self._watcher is not None:
                self._watcher.mark()
            self.catalog = load_catalog(self.settings.services_file, settings=self.settings)
        if self._client is None:
            self._client = make_client(self.settings)
        await self.ops.start()
        self.publisher.start()
        self._broker = build_broker(
            self.settings,
            on_probe_run=self.run_now,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        self._connect_task = asyncio.create_task(self._connect(self._broker), name="nats-connect")
        done, _ = await asyncio.wait({self._connect_task}, timeout=CONNECT_WAIT)
        if not done:
            log.warning("nats not reachable yet, monitoring anyway", url=self._nats_hosts())
        # Before the first turn, so building 50,000 requests delays no check.
        self._requests = RequestCache(client=self._client)
        self._requests.prepare(self.catalog.services)
        gc.collect()
        self._scheduler = Scheduler(
            self._owned(),
            run_check=self._scheduled_check,
            semaphore=self._semaphore,
            on_skip=lambda _, n: self.metrics.skipped.inc(n),
            clock=self._clock,
            phase=wall_phase,
        )
        self._scheduler.start()
        _settle_heap()
        self._update_gauges()
        if self._watcher is not None:
            self._watcher.start()
        log.info(
            "prober started",
            services=len(self.catalog.services),
            scheduled=self._scheduler.scheduled,
            ops_port=self.ops.port,
            region=self.settings.region,
            prober_id=self.settings.prober_id,
        )

    async def stop(self) -> None:
        """Finish running checks, publish what is buffered, then close everything."""
        self._stopping = True
        if self._watcher is not None:
            await self._watcher.stop()
        if self._reload_task is not None:
            await asyncio.gather(self._reload_task, return_exceptions=True)
        if self.membership is not None:
            await self.membership.leave()  # the other replicas take our share at once
        if self._scheduler is not None:
            await self._scheduler.stop(grace=SHUTDOWN_GRACE)
        with contextlib.suppress(TimeoutError):  # let manual runs in progress submit results
            async with asyncio.timeout(SHUTDOWN_GRACE):
                for _ in range(MANUAL_RUNS):
                    await self._manual.acquire()
        if self._broker is not None and self.nats_connected:
            await self.publisher.stop(grace=SHUTDOWN_GRACE)
        else:
            await self.publisher.stop(grace=0)
        for task in (self._connect_task, self._resync_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._broker is not None:
            try:
                await asyncio.wait_for(self._broker.stop(), SHUTDOWN_GRACE)
            except Exception as exc:  # a drain during an outage; close hard instead
                log.warning("nats close failed", error=type(exc).__name__)
                if self._nc is not None:
                    await self._nc.close()
        if self._owns_client and self._client is not None:
            await self._client.aclose()
        await self.ops.stop()
        log.info("prober stopped", unpublished=self.publisher.depth)

    def request_reload(self) -> None:
        """Reload the catalog soon (SIGHUP); a reload already running is not repeated."""
        if self._stopping or (self._reload_task is not None and not self._reload_task.done()):
            return
        self._reload_task = asyncio.create_task(self.reload(reason="signal"), name="reload")

    async def reload(self, *, reason: str) -> bool:
        """Read the catalog file again and apply it; an invalid one is refused, the old kept."""
        async with self._reload_lock:
            if self._watcher is not None:
                self._watcher.mark()  # before reading: a write during the read is seen later
            try:
                catalog = await asyncio.to_thread(
                    load_catalog, self.settings.services_file, settings=self.settings
                )
            except CatalogError as exc:
                self.metrics.reloads.labels("refused").inc()
                log.error(f"catalog reload refused, keeping the running catalog: {exc}")
                return False
            old = self.catalog.services if self.catalog is not None else ()
            before = {s.id: s for s in old}
            after = {s.id: s for s in catalog.services}
            added = [i for i in after if i not in before]
            removed = [i for i in before if i not in after]
            changed = [i for i in after if i in before and after[i] != before[i]]
            self.catalog = catalog
            for service_id in removed:
                self._last_status.pop(service_id, None)
            if self._requests is not None:  # built for the old catalog's endpoint objects
                self._requests.clear()
                self._requests.prepare(catalog.services)
            self._reschedule()
            _settle_heap(collect=True)
            self.metrics.reloads.labels("applied").inc()
            log.info(
                "catalog reloaded",
                reason=reason,
                services=len(catalog.services),
                added=_ids(added),
                removed=_ids(removed),
                changed=_ids(changed),
            )
            if self._js is not None and self._streams_ready:
                try:
                    await publish_catalog(catalog, js=self._js)
                except Exception as exc:  # published again on the next reconnect or reload
                    log.warning("catalog publish failed", error=f"{type(exc).__name__}: {exc}")
            return True

    def _owned(self) -> list[Service]:
        """The services this replica schedules: its share, or all of them without sharding."""
        assert self.catalog is not None
        if self.membership is None:
            return list(self.catalog.services)
        return [s for s in self.catalog.services if self.membership.owns(s.id)]

    def _share_moved(self) -> None:
        assert self.membership is not None
        self._reschedule(since=self.membership.changed_at)  # the instant all replicas agree on

    def _reschedule(self, *, since: float | None = None) -> None:
        if self._scheduler is None or self._stopping:
            return
        added, removed, _ = self._scheduler.update(self._owned(), since=since)
        if self.membership is not None and (added or removed):
            log.info(
                "share changed",
                members=len(self.membership.members),
                scheduled=self._scheduler.scheduled,
                taken=len(added),
                released=len(removed),
            )
        self._update_gauges()

    def _update_gauges(self) -> None:
        self.metrics.services_scheduled.set(self._scheduler.scheduled if self._scheduler else 0)
        self.metrics.members.set(len(self.membership.members) if self.membership else 1)

    async def run_now(self, request: ProbeRunRequest) -> ProbeRunReply:
        """Run the requested checks now (trigger `manual`), publish and return them."""
        assert self.catalog is not None
        if self._stopping:
            return ProbeRunReply(error="prober is shutting down")
        if request.service_id is not None:
            service = self.catalog.get(request.service_id)
            if service is None:
                return ProbeRunReply(error=f"unknown service '{request.service_id}'")
            services: tuple[Service, ...] = (service,)
        else:
            services = self.catalog.services
        async with self._manual:
            results = await asyncio.gather(*(self._manual_check(s) for s in services))
        return ProbeRunReply(results=list(results))

    async def _manual_check(self, service: Service) -> CheckCompleted:
        requested = datetime.now(UTC)
        async with self._semaphore:
            check = await self._check(service, trigger="manual", scheduled_at=requested)
        return check.to_event()

    async def _scheduled_check(self, service: Service, due: datetime, lateness: float) -> None:
        self.metrics.lateness.observe(lateness)
        await self._check(service, trigger="scheduled", scheduled_at=due)

    async def _check(
        self, service: Service, *, trigger: Trigger, scheduled_at: datetime
    ) -> wire.Check:
        assert self._client is not None
        if self._requests is None or self._requests.client is not self._client:
            self._requests = RequestCache(client=self._client)
        result = await probe_service(
            service,
            client=self._client,
            settings=self.settings,
            trigger=trigger,
            scheduled_at=scheduled_at,
            requests=self._requests,
        )
        self._counters[result.status].inc()
        self.publisher.submit(result)
        previous = self._last_status.get(service.id)
        self._last_status[service.id] = result.status
        _log_check(result, previous=previous)
        return result

    async def _connect(self, broker: NatsBroker) -> None:
        """Connect (retrying forever), declare streams, publish the catalog."""
        backoff = 0.5
        while True:
            try:
                if self._nc is None:
                    await broker.start()
                    self._nc = broker.config.connection_state.connection
                    self._js = broker.config.connection_state.stream
                    self.metrics.nats_connected.set(1)
                    log.info("nats connected", url=self._nats_hosts())
                if self._acks is None:  # our own ack inbox (services.prober.acks)
                    acks = AckInbox(nc=self._nc, stream=CHECKS_STREAM)
                    await acks.start()
                    self._acks = acks
                assert self._js is not None and self.catalog is not None
                await ensure_streams(self._js, self.settings)
                if self.membership is not None:
                    await self.membership.join(js=self._js)
                self._streams_ready = True
                self.publisher.nudge()
                await publish_catalog(self.catalog, js=self._js)
                return
            except Exception as exc:
                log.warning("nats setup failed, retrying", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _send(self, batch: list[Outgoing], ack_wait: float) -> list[BaseException | None]:
        if self._acks is None:
            raise ConnectionError("not connected to NATS")
        return await self._acks.publish(batch, ack_wait=ack_wait)

    def _can_publish(self) -> bool:
        return self._streams_ready and self.nats_connected

    async def _on_disconnected(self) -> None:
        self.metrics.nats_connected.set(0)
        if self._nc is not None and not self._stopping:
            log.warning("nats disconnected, buffering results", buffered=self.publisher.depth)

    async def _on_reconnected(self) -> None:
        self.metrics.nats_connected.set(1)
        log.info("nats reconnected", buffered=self.publisher.depth)
        self.publisher.nudge()
        if self._streams_ready and (self._resync_task is None or self._resync_task.done()):
            self._resync_task = asyncio.create_task(self._resync(), name="nats-resync")

    async def _resync(self) -> None:
        """After a reconnect: the server may be a new one, without our streams or catalog."""
        assert self._js is not None and self.catalog is not None
        try:
            await ensure_streams(self._js, self.settings)
            if self.membership is not None:
                await self.membership.join(js=self._js)
            await publish_catalog(self.catalog, js=self._js)
        except Exception as exc:
            log.warning("nats resync failed", error=f"{type(exc).__name__}: {exc}")
        self.publisher.nudge()

    async def _readiness(self) -> dict[str, object]:
        return {
            "ready": self.catalog is not None and self.nats_connected,
            "nats": self.nats_connected,
            "services": len(self.catalog.services) if self.catalog else 0,
            "bufferDepth": self.publisher.depth,
            "bufferDropped": self.publisher.dropped,
            "checksInFlight": self._scheduler.in_flight if self._scheduler else 0,
            "scheduled": self._scheduler.scheduled if self._scheduler else 0,
            "replicas": list(self.membership.members) if self.membership else [],
        }

    def _nats_hosts(self) -> str:
        # Only host:port, so credentials in NATS_URL never reach a log line.
        hosts = [u.strip().rpartition("@")[2] for u in self.settings.nats_url.split(",")]
        return ",".join(hosts)


def _settle_heap(*, collect: bool = False) -> None:
    """Move the long-lived objects (catalog, schedule, requests) out of the collector's view.

    With tens of thousands of services, the collector's full passes over them took more
    than half of the CPU (py-spy: gc_collect_main); frozen, they are never traversed again.
    After a reload the old catalog is unfrozen and collected first.
    """
    if collect:
        gc.unfreeze()
        gc.collect()
    gc.freeze()


def _ids(ids: list[str], limit: int = 20) -> str:
    """`a,b,c` for a log field, cut after `limit` ids."""
    if not ids:
        return "-"
    more = f",+{len(ids) - limit}" if len(ids) > limit else ""
    return ",".join(ids[:limit]) + more


def _log_check(result: wire.Check, *, previous: CheckStatus | None) -> None:
    """One line per check that says something: `check service=x status=down error=timeout`.

    A failed check is a WARNING and a degraded one INFO, every time; an `up` check is INFO
    when it ends another status (or someone asked for it), else DEBUG, the first one after
    start included: at 1,700 checks/s a line for every healthy check cost ~10 % of the CPU
    and buried the lines that matter.
    """
    quiet = result.status == "up" and previous in (None, "up") and result.trigger == "scheduled"
    if quiet and not _check_log.isEnabledFor(logging.DEBUG):
        return
    failed = next((e for e in result.endpoints if not e.ok), None)
    slow = next((e for e in result.endpoints if not e.within_threshold), None)
    fields: dict[str, object] = {
        "service": result.service_id,
        "status": result.status,
        "duration_ms": round(result.duration_ms),
        "trigger": result.trigger,
    }
    if previous is not None and previous != result.status:
        fields["was"] = previous
    if failed is not None:
        fields |= {"error": failed.error_type, "endpoint": failed.name}
        if failed.status_code is not None:
            fields["code"] = failed.status_code
        fields["detail"] = failed.error_message
        log.warning("check", **fields)
        return
    if slow is not None:
        fields |= {"endpoint": slow.name, "slow_ms": round(slow.response_time_ms)}
    if quiet:
        log.debug("check", **fields)
    else:
        log.info("check", **fields)
