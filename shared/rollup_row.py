"""The columns of a rollup row (api_call_logs and api_call_logs_hourly), in table order.

The aggregator writes them and the api reads them; both name them from here so that a new
counter is added in one place.
"""

from __future__ import annotations

# Integer counters that add up when rows merge.
COUNT_COLUMNS = (
    "total_checks",
    "up_checks",
    "degraded_checks",
    "down_checks",
    "total_requests",
    "successful_requests",
    "failed_requests",
    "within_threshold",
    "timed_requests",
)
# Every counter column, in table order: the counts, the response-time sum (adds up),
# min and max (merge by least/greatest), then the jsonb maps (merge by adding per key).
ROLLUP_COLUMNS = (
    *COUNT_COLUMNS,
    "sum_response_time_ms",
    "min_response_time_ms",
    "max_response_time_ms",
    "errors",
    "latency_hist",
)
