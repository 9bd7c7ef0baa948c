"""The mergeable latency histogram stored in the rollups (a sparse log-bucket sketch).

A value v > 0 ms goes to bucket ceil(log_gamma(v)); gamma = (1 + a) / (1 - a), so the
bucket's representative 2 * gamma**i / (gamma + 1) is within `a` (1 %) of every value in
it. Histograms are JSON objects {"<bucket>": count} and merge by adding counts, so a
percentile over any window comes from rollups alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(GAMMA)
MIN_VALUE_MS = 0.001  # values at or below this share one bucket


def bucket_of(value_ms: float) -> int:
    """The bucket index of a latency in ms."""
    return math.ceil(math.log(max(value_ms, MIN_VALUE_MS)) / _LOG_GAMMA)


def bucket_value(index: int) -> float:
    """The representative latency of a bucket, within RELATIVE_ACCURACY of its members."""
    return 2 * GAMMA**index / (GAMMA + 1)


def add(hist: dict[str, int], value_ms: float, count: int = 1) -> None:
    """Count one more value into a histogram in place."""
    key = str(bucket_of(value_ms))
    hist[key] = hist.get(key, 0) + count


def merge(histograms: Iterable[Mapping[str, int] | None]) -> dict[str, int]:
    """The sum of several histograms."""
    out: dict[str, int] = {}
    for hist in histograms:
        for key, count in (hist or {}).items():
            out[key] = out.get(key, 0) + int(count)
    return out


def quantiles(
    hist: Mapping[str, int], qs: Iterable[float], lo: float | None = None, hi: float | None = None
) -> list[float | None]:
    """Quantiles (0..1) of a histogram, clamped to the known min/max; None when empty."""
    items = sorted((int(k), int(c)) for k, c in hist.items() if int(c) > 0)
    total = sum(c for _, c in items)
    out: list[float | None] = []
    for q in qs:
        if total == 0:
            out.append(None)
            continue
        rank = q * (total - 1)  # the same rank convention as numpy's default percentile
        seen = 0
        value = bucket_value(items[-1][0])
        for index, count in items:
            seen += count
            if seen > rank:
                value = bucket_value(index)
                break
        if lo is not None:
            value = max(value, lo)
        if hi is not None:
            value = min(value, hi)
        out.append(value)
    return out
