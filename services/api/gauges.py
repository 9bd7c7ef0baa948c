"""Per-service Prometheus gauges (uptime, latency, SLA target, last state) from the rollups.

Computed when /metrics is scraped, at most once per METRICS_CACHE_SECONDS, from the daily
rollups (summed inside PostgreSQL per window) and `service_state`: a scrape never scans a raw
table. Percentiles are for today only (merging 30 days of histograms for every service at
each scrape would not be cheap); averages and uptime for 1, 7 and 30 days. While PostgreSQL is
down the last snapshot is served (its age is a gauge).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.api import metrics
from services.api.store import DatabaseUnavailable, MetricsStore
from shared.rules import uptime_percent

WINDOWS = (("1d", 1), ("7d", 7), ("30d", 30))  # label, UTC days incl. today (as ?days=)
QUANTILE_WINDOW = "1d"
STATS = ("avg", "p50", "p95", "p99")


@dataclass
class ServiceFigures:
    """One service's gauge values."""

    sla_target: float
    uptime: dict[str, float | None] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[tuple[str, str], float | None] = field(default_factory=dict)
    up: float | None = None
    last_check_at: datetime | None = None


@dataclass
class Snapshot:
    """Every active service's figures at one moment."""

    computed_at: datetime
    services: dict[str, ServiceFigures]


async def compute_snapshot(*, store: MetricsStore, now: datetime) -> Snapshot:
    """Read the rollups of the last 30 days and the aggregator's state into gauge values."""
    today = now.date()
    services = await store.list_services(active_only=True)
    ids = [s.id for s in services]
    totals = {
        label: await store.window_totals(
            ids,
            today - timedelta(days=days - 1),
            today,
            histograms=label == QUANTILE_WINDOW,
        )
        for label, days in WINDOWS
    }
    states = {s.service_id: s for s in await store.service_states()}
    out: dict[str, ServiceFigures] = {}
    for service in services:
        figures = ServiceFigures(sla_target=service.sla_target)
        for label, _ in WINDOWS:
            total = totals[label].get(service.id) or metrics.Rollup()
            figures.uptime[label] = uptime_percent(total.successful_requests, total.total_requests)
            figures.requests[label] = total.total_requests
            figures.latency_ms[(label, "avg")] = metrics.average_ms(total)
            if label == QUANTILE_WINDOW:
                p50, _, p95, p99 = metrics.percentiles(total)
                figures.latency_ms.update({(label, "p50"): p50, (label, "p95"): p95})
                figures.latency_ms[(label, "p99")] = p99
        state = states.get(service.id)
        if state is not None and state.last_status is not None:
            figures.up = 0.0 if state.last_status == "down" else 1.0
            figures.last_check_at = state.last_check_at
        out[service.id] = figures
    return Snapshot(computed_at=now, services=out)


class ServiceGauges(Collector):
    """A prometheus_client collector over the latest snapshot; `refresh` renews it."""

    def __init__(
        self,
        *,
        ttl_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._monotonic = monotonic
        self._snapshot: Snapshot | None = None
        self._taken_at = float("-inf")
        self._lock = asyncio.Lock()

    async def refresh(self, *, store: MetricsStore, now: datetime) -> None:
        """Recompute unless the snapshot is younger than the TTL; keep the old one on failure."""
        if self._monotonic() - self._taken_at < self._ttl:
            return
        async with self._lock:
            if self._monotonic() - self._taken_at < self._ttl:
                return
            try:
                self._snapshot = await compute_snapshot(store=store, now=now)
            except DatabaseUnavailable:
                return
            self._taken_at = self._monotonic()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self._snapshot
        services = snap.services if snap is not None else {}
        uptime = GaugeMetricFamily(
            "watch_service_uptime_percent",
            "Count-based uptime over the last N UTC days incl. today (as ?days=N), percent.",
            labels=["service_id", "window"],
        )
        requests = GaugeMetricFamily(
            "watch_service_requests",
            "Endpoint calls counted over the window.",
            labels=["service_id", "window"],
        )
        latency = GaugeMetricFamily(
            "watch_service_response_time_seconds",
            "Response time over the window: avg (every window), p50/p95/p99 (1d only).",
            labels=["service_id", "window", "stat"],
        )
        target = GaugeMetricFamily(
            "watch_service_sla_target_percent", "The service's SLA target.", labels=["service_id"]
        )
        up = GaugeMetricFamily(
            "watch_service_up",
            "1 when the last check was up or degraded, 0 when down.",
            labels=["service_id"],
        )
        last = GaugeMetricFamily(
            "watch_service_last_check_timestamp_seconds",
            "When the last counted check started (Unix time).",
            labels=["service_id"],
        )
        for sid, f in sorted(services.items()):
            target.add_metric([sid], f.sla_target)
            for label, _ in WINDOWS:
                requests.add_metric([sid, label], f.requests[label])
                value = f.uptime[label]
                if value is not None:
                    uptime.add_metric([sid, label], value)
                for stat in STATS:
                    ms = f.latency_ms.get((label, stat))
                    if ms is not None:
                        latency.add_metric([sid, label, stat], ms / 1000.0)
            if f.up is not None:
                up.add_metric([sid], f.up)
            if f.last_check_at is not None:
                last.add_metric([sid], f.last_check_at.timestamp())
        computed = GaugeMetricFamily(
            "watch_service_gauges_computed_timestamp_seconds",
            "When the per-service gauges were computed from the rollups (Unix time).",
        )
        if snap is not None:
            computed.add_metric([], snap.computed_at.timestamp())
        yield from (uptime, requests, latency, target, up, last, computed)
