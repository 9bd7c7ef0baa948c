"""Whether PostgreSQL answers, as last seen by any database call; logged once per change."""

from __future__ import annotations

from prometheus_client import Gauge

from shared.logs import get_log

log = get_log(__name__)


class DbHealth:
    """The database state shared by the consumers and /readyz."""

    def __init__(self, *, gauge: Gauge) -> None:
        self._gauge = gauge
        self.up: bool | None = None  # None until the first call says either way

    def mark_up(self) -> None:
        """A database call succeeded (or the database answered with a refusal)."""
        if self.up is False:
            log.info("database_up")
        self.up = True
        self._gauge.set(1)

    def mark_down(self, exc: BaseException) -> None:
        """A database call failed because the database is unreachable."""
        if self.up is not False:
            log.error("database_down", error=type(exc).__name__, detail=str(exc)[:200])
        self.up = False
        self._gauge.set(0)
