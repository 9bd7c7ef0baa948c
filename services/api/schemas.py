"""Response models of the HTTP API (camelCase on the wire, snake_case in Python).

Rounding: percentages (uptime, errorRate, currentSLA, responseTimeSLA, remainingPercent) to 3
decimals, milliseconds to 1 decimal. `null` means "no data", never zero.
"""

from __future__ import annotations

import datetime as dt
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from shared.events import CheckCompleted
from shared.rules import DayStatus

BREACH_DAYS: tuple[DayStatus, ...] = ("po", "mo")


class ApiModel(BaseModel):
    """camelCase aliases on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class StaleModel(ApiModel):
    """An answer computed from the database, that may be replayed while it is down."""

    stale: bool = Field(
        default=False, description="True when PostgreSQL is down and this is the last good answer."
    )
    computed_at: datetime = Field(description="When this answer was computed (UTC).")

    def as_stale(self) -> StaleModel:
        """The same answer marked as replayed."""
        return self.model_copy(update={"stale": True})


class Period(ApiModel):
    """A window of whole UTC days, both ends included."""

    days: int = Field(description="Number of UTC days in the window.")
    start: date
    end: date
    month: str | None = Field(
        default=None, description="YYYY-MM when the window is a calendar month (?month=)."
    )


class ServiceMetrics(StaleModel):
    """One service's figures over a window of days."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "serviceId": "face-compare",
                    "period": {"days": 30, "start": "2026-01-01", "end": "2026-01-30"},
                    "uptime": 99.2,
                    "avgResponseTime": 245.3,
                    "minResponseTime": 120.0,
                    "maxResponseTime": 1520.4,
                    "totalRequests": 86400,
                    "successfulRequests": 85709,
                    "failedRequests": 691,
                    "degradedChecks": 12,
                    "totalChecks": 86400,
                    "p50ResponseTime": 230.1,
                    "p90ResponseTime": 310.7,
                    "p95ResponseTime": 402.2,
                    "p99ResponseTime": 980.5,
                    "errorRate": 0.8,
                    "errorsByType": {"timeout": 500, "http_status": 191},
                    "stale": False,
                    "computedAt": "2026-01-30T12:00:00Z",
                }
            ]
        }
    )

    service_id: str
    period: Period
    uptime: float | None = Field(description="100 * successful / total requests, percent.")
    avg_response_time: float | None = Field(description="Mean over calls that got a response, ms.")
    min_response_time: float | None
    max_response_time: float | None
    total_requests: int
    successful_requests: int
    failed_requests: int
    degraded_checks: int
    total_checks: int
    p50_response_time: float | None
    p90_response_time: float | None
    p95_response_time: float | None
    p99_response_time: float | None
    error_rate: float | None = Field(description="100 * failed / total requests, percent.")
    errors_by_type: dict[str, int] = Field(description="Failed requests per errorType.")


class MetricsList(StaleModel):
    """Every active service's figures over the same window."""

    period: Period
    services: list[ServiceMetrics]

    def as_stale(self) -> MetricsList:
        return self.model_copy(
            update={"stale": True, "services": [s.as_stale() for s in self.services]}
        )


class ErrorBudget(ApiModel):
    """What the SLA target allows over the window, used and left, in requests, checks and
    minutes of downtime (remaining is negative when overspent)."""

    allowed_failures: float = Field(description="total requests * (100 - slaTarget) / 100.")
    used_failures: int = Field(description="Failed requests.")
    remaining_failures: float = Field(description="allowed - used; negative when overspent.")
    remaining_percent: float | None = Field(
        description="100 * remainingFailures / allowedFailures; null without data."
    )
    allowed_failed_checks: float = Field(description="total checks * (100 - slaTarget) / 100.")
    used_failed_checks: int = Field(description="Checks whose status was down.")
    remaining_failed_checks: float = Field(description="allowed - used checks.")
    check_interval_seconds: float = Field(
        description="The service's check interval: the downtime one down check stands for."
    )
    allowed_downtime_minutes: float = Field(
        description="days * 1440 * (100 - slaTarget) / 100: the whole window's allowance."
    )
    used_downtime_minutes: float = Field(
        description="usedFailedChecks * checkIntervalSeconds / 60."
    )
    remaining_downtime_minutes: float = Field(description="allowed - used minutes.")


class AccountingPolicy(ApiModel):
    """How the figures of this answer are counted (the same for every SLA answer)."""

    uptime_basis: Literal["requests"] = Field(
        default="requests",
        description="Uptime is 100 * successful / total endpoint calls in the window.",
    )
    degraded: Literal["up"] = Field(
        default="up",
        description="A call that succeeded but exceeded its latency threshold counts as up; "
        "it lowers responseTimeSLA instead.",
    )
    no_data: Literal["excluded"] = Field(
        default="excluded",
        description="Time without results is neither up nor down: an empty window has "
        "currentSLA null, a day without results is nd and never a breach.",
    )
    day_boundary: Literal["UTC"] = Field(
        default="UTC", description="Days and months start at 00:00 UTC."
    )
    breach_days: list[DayStatus] = Field(
        default_factory=lambda: list(BREACH_DAYS), description="Day statuses counted in breaches."
    )
    downtime_per_down_check: Literal["checkInterval"] = Field(
        default="checkInterval",
        description="Each down check stands for one check interval of downtime.",
    )
    major_outage_below: float = Field(description="Day uptime under this is mo (else po).")


class SlaReport(StaleModel):
    """SLA compliance of one service over a window of days."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "serviceId": "face-compare",
                    "slaTarget": 99.9,
                    "currentSLA": 99.2,
                    "breaches": 3,
                    "responseTimeSLA": 98.7,
                    "isBreached": True,
                    "errorBudget": {
                        "allowedFailures": 86.4,
                        "usedFailures": 691,
                        "remainingFailures": -604.6,
                        "remainingPercent": -699.769,
                        "allowedFailedChecks": 86.4,
                        "usedFailedChecks": 60,
                        "remainingFailedChecks": 26.4,
                        "checkIntervalSeconds": 30.0,
                        "allowedDowntimeMinutes": 43.2,
                        "usedDowntimeMinutes": 30.0,
                        "remainingDowntimeMinutes": 13.2,
                    },
                    "accounting": {
                        "uptimeBasis": "requests",
                        "degraded": "up",
                        "noData": "excluded",
                        "dayBoundary": "UTC",
                        "breachDays": ["po", "mo"],
                        "downtimePerDownCheck": "checkInterval",
                        "majorOutageBelow": 95.0,
                    },
                    "period": {
                        "days": 30,
                        "start": "2026-01-01",
                        "end": "2026-01-30",
                        "month": None,
                    },
                    "stale": False,
                    "computedAt": "2026-01-30T12:00:00Z",
                }
            ]
        }
    )

    service_id: str
    sla_target: float = Field(description="The service's target uptime, percent.")
    current_sla: float | None = Field(alias="currentSLA", description="Uptime over the window.")
    breaches: int = Field(description="Days in the window whose status is po or mo.")
    response_time_sla: float | None = Field(
        alias="responseTimeSLA", description="100 * requests within the latency threshold / total."
    )
    is_breached: bool = Field(description="currentSLA < slaTarget (false without data).")
    error_budget: ErrorBudget
    accounting: AccountingPolicy
    period: Period


class TrendPoint(ApiModel):
    """One UTC hour or day; a bucket without data has requests 0 and nulls."""

    start: datetime = Field(description="Start of the hour or day (UTC).")
    hour: datetime = Field(description="Same as start (kept for clients of the hourly series).")
    requests: int
    uptime: float | None
    error_rate: float | None = Field(description="100 * failed / total requests, percent.")
    avg_response_time: float | None
    p95_response_time: float | None
    p99_response_time: float | None


class Trend(StaleModel):
    """A series, oldest first, one point per hour (resolution 1h) or UTC day (1d)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "serviceId": "face-compare",
                    "resolution": "1h",
                    "hours": 2,
                    "days": None,
                    "points": [
                        {
                            "start": "2026-01-30T10:00:00Z",
                            "hour": "2026-01-30T10:00:00Z",
                            "requests": 120,
                            "uptime": 100.0,
                            "errorRate": 0.0,
                            "avgResponseTime": 231.5,
                            "p95ResponseTime": 390.2,
                            "p99ResponseTime": 512.0,
                        },
                        {
                            "start": "2026-01-30T11:00:00Z",
                            "hour": "2026-01-30T11:00:00Z",
                            "requests": 0,
                            "uptime": None,
                            "errorRate": None,
                            "avgResponseTime": None,
                            "p95ResponseTime": None,
                            "p99ResponseTime": None,
                        },
                    ],
                    "stale": False,
                    "computedAt": "2026-01-30T11:30:00Z",
                }
            ]
        }
    )

    service_id: str
    resolution: Literal["1h", "1d"]
    hours: int | None = Field(description="Window length with resolution 1h, else null.")
    days: int | None = Field(description="Window length with resolution 1d, else null.")
    points: list[TrendPoint]


class UptimeDay(ApiModel):
    """One UTC day: o operational, po partial outage, mo major outage, nd no data."""

    date: dt.date
    status: DayStatus
    uptime: float | None


class UptimeReport(StaleModel):
    """Every day of the window, oldest first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "serviceId": "face-compare",
                    "period": {"days": 2, "start": "2026-01-29", "end": "2026-01-30"},
                    "days": [
                        {"date": "2026-01-29", "status": "po", "uptime": 98.5},
                        {"date": "2026-01-30", "status": "o", "uptime": 100.0},
                    ],
                    "stale": False,
                    "computedAt": "2026-01-30T12:00:00Z",
                }
            ]
        }
    )

    service_id: str
    period: Period
    days: list[UptimeDay]


class ServiceStatus(ApiModel):
    """A catalog service and its last check as the aggregator saw it."""

    service_id: str
    name: str
    active: bool
    last_check_at: datetime | None
    last_status: Literal["up", "degraded", "down"] | None
    sla_breached: bool | None = Field(
        default=None, description="The aggregator's SLA state over SLA_WINDOW_DAYS; null unknown."
    )


class ProberStatus(ApiModel):
    """A prober heard from in the last hour (its newest recorded check)."""

    prober_id: str
    region: str
    last_check_at: datetime


class ConsumerLag(ApiModel):
    """A durable JetStream consumer's backlog."""

    pending: int = Field(description="Messages not yet delivered to the consumer.")
    ack_pending: int = Field(description="Delivered but not yet acknowledged.")


class Pipeline(ApiModel):
    """Consumer lag on WATCH_CHECKS; null when NATS or the consumer is unknown."""

    recorder: ConsumerLag | None
    aggregator: ConsumerLag | None


class StatusReport(StaleModel):
    """Monitoring status: services, probers and pipeline lag."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "services": [
                        {
                            "serviceId": "face-compare",
                            "name": "Face compare",
                            "active": True,
                            "lastCheckAt": "2026-01-30T11:59:30Z",
                            "lastStatus": "up",
                            "slaBreached": False,
                        }
                    ],
                    "probers": [
                        {
                            "proberId": "prober-0",
                            "region": "local",
                            "lastCheckAt": "2026-01-30T11:59:30Z",
                        }
                    ],
                    "pipeline": {
                        "recorder": {"pending": 0, "ackPending": 3},
                        "aggregator": {"pending": 12, "ackPending": 0},
                    },
                    "stale": False,
                    "computedAt": "2026-01-30T12:00:00Z",
                }
            ]
        }
    )

    services: list[ServiceStatus]
    probers: list[ProberStatus]
    pipeline: Pipeline


class Health(ApiModel):
    """Liveness with the state of the edges; `degraded` while one is down."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "degraded", "database": "down", "nats": "up", "version": "0.1.0"}
            ]
        }
    )

    status: Literal["ok", "degraded"]
    database: Literal["up", "down"]
    nats: Literal["up", "down"]
    version: str


class HealthCheckResults(ApiModel):
    """The checks the prober ran on request (also published like scheduled ones)."""

    results: list[CheckCompleted]


class ErrorBody(ApiModel):
    """An error: a stable code and a message for humans."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"error": "not_found", "message": "unknown service 'x'"}]}
    )

    error: str
    message: str


class ParamError(ApiModel):
    """One bad parameter."""

    param: str
    message: str
    got: str | None


class ValidationErrorBody(ApiModel):
    """422: what was wrong and what is allowed."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": "invalid_parameter",
                    "detail": [
                        {
                            "param": "days",
                            "message": "days must be an integer from 1 to 3650",
                            "got": "abc",
                        }
                    ],
                }
            ]
        }
    )

    error: Literal["invalid_parameter"] = "invalid_parameter"
    detail: list[ParamError]
