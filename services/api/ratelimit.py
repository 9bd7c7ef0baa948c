"""Token buckets for manual checks: one per client IP and one for everybody together."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

MAX_TRACKED_CLIENTS = 10_000  # beyond this the least recently seen client starts afresh


class TokenBucket:
    """`burst` tokens, refilled at `per_second`; each allowed call takes one."""

    def __init__(self, *, per_second: float, burst: int, now: float) -> None:
        self.per_second = per_second
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.per_second)
        self.updated = now

    def wait_seconds(self, now: float) -> float:
        """0 when a token is available now, else the seconds until one is."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.per_second

    def take(self, now: float) -> None:
        """Take one token (call after wait_seconds said 0)."""
        self._refill(now)
        self.tokens -= 1


class RateLimiter:
    """A bucket per client and a global one; a call passes only when both have a token."""

    def __init__(
        self,
        *,
        client_per_minute: float,
        client_burst: int,
        global_per_minute: float,
        global_burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._client_rate = client_per_minute / 60
        self._client_burst = client_burst
        self._global = TokenBucket(
            per_second=global_per_minute / 60, burst=global_burst, now=clock()
        )
        self._clients: OrderedDict[str, TokenBucket] = OrderedDict()

    def _bucket(self, client: str, now: float) -> TokenBucket:
        bucket = self._clients.get(client)
        if bucket is None:
            bucket = TokenBucket(per_second=self._client_rate, burst=self._client_burst, now=now)
            self._clients[client] = bucket
            while len(self._clients) > MAX_TRACKED_CLIENTS:
                self._clients.popitem(last=False)
        self._clients.move_to_end(client)
        return bucket

    def acquire(self, client: str) -> int:
        """0 when the call may go ahead (tokens taken), else whole seconds to wait (≥ 1)."""
        now = self._clock()
        mine = self._bucket(client, now)
        wait = max(mine.wait_seconds(now), self._global.wait_seconds(now))
        if wait > 0:
            return max(1, math.ceil(wait))
        mine.take(now)
        self._global.take(now)
        return 0
