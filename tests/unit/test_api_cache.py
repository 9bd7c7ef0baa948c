"""The stale-answer cache: bounded, keyed by request, too-old answers never replayed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from services.api.cache import StaleCache
from services.api.schemas import Period, UptimeReport

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def report(service_id: str, at: datetime = T0) -> UptimeReport:
    period = Period(days=1, start=date(2026, 3, 10), end=date(2026, 3, 10))
    return UptimeReport(service_id=service_id, period=period, days=[], computed_at=at)


def test_replays_the_last_answer_marked_stale_with_its_time() -> None:
    cache = StaleCache(max_entries=10, max_age_seconds=3600)
    cache.put(("uptime", "a", 1), report("a"))
    replay = cache.get(("uptime", "a", 1), T0 + timedelta(minutes=5))
    assert replay is not None and replay.stale is True and replay.computed_at == T0
    assert cache.get(("uptime", "a", 2), T0) is None


def test_bounded_least_recently_used_first() -> None:
    cache = StaleCache(max_entries=2, max_age_seconds=3600)
    cache.put("a", report("a"))
    cache.put("b", report("b"))
    assert cache.get("a", T0) is not None  # a is now the most recent
    cache.put("c", report("c"))
    assert len(cache) == 2
    assert cache.get("b", T0) is None
    assert cache.get("a", T0) is not None and cache.get("c", T0) is not None


def test_answers_older_than_the_limit_are_dropped() -> None:
    cache = StaleCache(max_entries=10, max_age_seconds=60)
    cache.put("a", report("a"))
    assert cache.usable(T0 + timedelta(seconds=60))
    assert not cache.usable(T0 + timedelta(seconds=61))
    assert cache.get("a", T0 + timedelta(seconds=61)) is None
    assert len(cache) == 0
