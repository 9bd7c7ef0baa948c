"""The prober's Prometheus metrics, in a registry per instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ProberMetrics:
    """Counters and gauges a scrape of the prober's /metrics shows."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # No per-service label: at 50,000 services that is 150,000 series per scrape; the
        # per-service story is in the results themselves (api /api/status).
        self.checks = Counter(
            "prober_checks", "Checks completed, by status.", ["status"], registry=r
        )
        self.skipped = Counter(
            "prober_checks_skipped",
            "Scheduled turns skipped (previous check still running, or the loop fell behind).",
            registry=r,
        )
        self.lateness = Histogram(
            "prober_check_lateness_seconds",
            "Check start minus its scheduled time.",
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.buffer_depth = Gauge(
            "prober_buffer_depth", "Results waiting to be published to JetStream.", registry=r
        )
        self.buffer_dropped = Counter(
            "prober_buffer_dropped",
            "Results dropped because the buffer was full (oldest first).",
            registry=r,
        )
        self.publish_failures = Counter(
            "prober_publish_failures",
            "JetStream publishes that failed and will be retried.",
            registry=r,
        )
        self.published = Counter(
            "prober_published", "Results acknowledged by JetStream.", registry=r
        )
        self.reloads = Counter(
            "prober_catalog_reloads",
            "Catalog reloads, by result (applied or refused).",
            ["result"],
            registry=r,
        )
        self.services_scheduled = Gauge(
            "prober_services_scheduled",
            "Services this replica schedules (its share of the catalog).",
            registry=r,
        )
        self.members = Gauge(
            "prober_replicas",
            "Live prober replicas of this region, as this one sees them.",
            registry=r,
        )
        self.publish_batch = Histogram(
            "prober_publish_batch_size",
            "Results published per flush.",
            buckets=(1, 4, 16, 64, 256, 1024),
            registry=r,
        )
        self.nats_connected = Gauge(
            "prober_nats_connected", "1 while connected to NATS.", registry=r
        )
