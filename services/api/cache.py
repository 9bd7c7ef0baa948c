"""The last good answer per request, replayed with `stale: true` while PostgreSQL is down."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from datetime import datetime, timedelta

from services.api.schemas import StaleModel


class StaleCache:
    """A bounded LRU of answers keyed by endpoint and validated parameters."""

    def __init__(self, *, max_entries: int = 2048, max_age_seconds: float = 86_400) -> None:
        self._entries: OrderedDict[Hashable, StaleModel] = OrderedDict()
        self._max_entries = max_entries
        self._max_age = timedelta(seconds=max_age_seconds)

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: Hashable, answer: StaleModel) -> None:
        """Remember a fresh answer, evicting the least recently used beyond the bound."""
        self._entries[key] = answer
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def get(self, key: Hashable, now: datetime) -> StaleModel | None:
        """The remembered answer marked stale, or None when absent or too old."""
        answer = self._entries.get(key)
        if answer is None:
            return None
        if now - answer.computed_at > self._max_age:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return answer.as_stale()

    def usable(self, now: datetime) -> bool:
        """True when at least one answer could still be replayed."""
        return any(now - a.computed_at <= self._max_age for a in self._entries.values())
