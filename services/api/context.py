"""What every handler needs, assembled once per app: settings, store, bus, cache, clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar, cast

from fastapi import Request

from services.api.bus import Bus
from services.api.cache import StaleCache
from services.api.gauges import ServiceGauges
from services.api.http_metrics import HttpMetrics
from services.api.ratelimit import RateLimiter
from services.api.schemas import StaleModel
from services.api.settings import ApiSettings
from services.api.store import DatabaseUnavailable, MetricsStore
from shared.logs import get_log
from shared.settings import Settings

log = get_log(__name__)

T = TypeVar("T", bound=StaleModel)
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


@dataclass
class ApiContext:
    """The edges of one api instance; handlers reach it through `context(request)`."""

    settings: Settings
    api_settings: ApiSettings
    store: MetricsStore
    bus: Bus
    cache: StaleCache
    http_metrics: HttpMetrics
    gauges: ServiceGauges
    limiter: RateLimiter
    version: str
    clock: Clock = utc_now
    _database_down: bool = field(default=False, repr=False)

    async def answer(self, key: Hashable, route: str, compute: Callable[[], Awaitable[T]]) -> T:
        """A fresh answer (remembered), or the last good one marked stale while the DB is down."""
        try:
            fresh = await compute()
        except DatabaseUnavailable as exc:
            self.http_metrics.database_unavailable.inc()
            if not self._database_down:  # one line per outage, not one per request
                self._database_down = True
                log.warning("database_down", reason=str(exc))
            replay = self.cache.get(key, self.clock())
            if replay is None:
                raise
            self.http_metrics.stale_answers.labels(route).inc()
            return cast(T, replay)
        if self._database_down:
            self._database_down = False
            log.info("database_back")
        self.cache.put(key, fresh)
        return fresh


async def context(request: Request) -> ApiContext:
    """The ApiContext of the app serving this request (a FastAPI dependency)."""
    # async on purpose: FastAPI runs a plain `def` dependency in a worker thread, which cost
    # about a fifth of the api's CPU per request (thread hand-off and wake-ups).
    return cast(ApiContext, request.app.state.ctx)
