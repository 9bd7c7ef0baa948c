"""The aggregator's Prometheus metrics, in a registry of its own per instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from shared.backlog import BacklogGauges


class AggregatorMetrics:
    """Counters and histograms scraped from /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.checks_applied = Counter(
            "checks_applied", "Checks counted into the rollups.", registry=r
        )
        self.duplicates_skipped = Counter(
            "duplicates_skipped", "Redelivered or replayed checks already counted.", registry=r
        )
        self.expired = Counter(
            "expired", "Checks older than RETENTION_DAYS, acked uncounted.", registry=r
        )
        self.dlq = Counter("dlq", "Malformed messages sent to the dead-letter subject.", registry=r)
        self.events_published = Counter(
            "events_published", "Events published to WATCH_EVENTS.", ["type"], registry=r
        )
        self.batch_seconds = Histogram(
            "batch_seconds",
            "Time to apply one batch, commit included.",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.lag_seconds = Histogram(
            "lag_seconds",
            "Now minus startedAt of the newest check of each applied batch.",
            registry=r,
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
        )
        self.backlog = BacklogGauges(r)
