"""The recorder's Prometheus metrics, in a registry of its own per instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.backlog import BacklogGauges


class RecorderMetrics:
    """Counters and histograms scraped from /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.results_stored = Counter(
            "results_stored", "Check results newly written to watch_server_logs.", registry=r
        )
        self.duplicates = Counter(
            "duplicates", "Check results that were already stored (redeliveries).", registry=r
        )
        self.expired = Counter(
            "expired", "Check results older than RETENTION_DAYS, acked unstored.", registry=r
        )
        self.dlq = Counter(
            "dlq", "Messages sent to the dead-letter subject, by reason.", ["reason"], registry=r
        )
        self.services_applied = Counter(
            "services_applied", "Service definitions that changed the services table.", registry=r
        )
        self.batch_size = Histogram(
            "batch_size",
            "Messages per consumed batch.",
            buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "batch_seconds",
            "Time to handle one batch, from receipt to ack.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.db_up = Gauge("db_up", "1 while PostgreSQL answers, else 0.", registry=r)
        self.backlog = BacklogGauges(r)
