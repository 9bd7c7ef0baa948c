"""Accounting rules shared by the writer (aggregator) and the reader (api) of the rollups."""

from __future__ import annotations

from typing import Literal

DayStatus = Literal["o", "po", "mo", "nd"]


def uptime_percent(successful: int, total: int) -> float | None:
    """Count-based uptime: successful calls over all calls, in percent; None without data."""
    if total <= 0:
        return None
    return 100.0 * successful / total


def day_status(
    successful: int, total: int, sla_target: float, major_outage_below: float
) -> DayStatus:
    """`nd` no calls; `o` uptime >= SLA target; `po` >= major_outage_below; `mo` below that."""
    uptime = uptime_percent(successful, total)
    if uptime is None:
        return "nd"
    if uptime >= sla_target:
        return "o"
    if uptime >= major_outage_below:
        return "po"
    return "mo"
