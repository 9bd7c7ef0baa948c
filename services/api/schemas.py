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

    days: int
    start: date
    end: date


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
    """The failures the SLA target allows over the window, and how many are left."""

    allowed_failures: float = Field(description="total requests * (100 - slaTarget) / 100.")
    used_failures: int
    remaining_failures: float = Field(description="allowed - used; negative when overspent.")
    remaining_percent: float | None = Field(
        description="100 * remaining / allowed; null without data."
    )


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
                    },
                    "period": {"days": 30, "start": "2026-01-01", "end": "2026-01-30"},
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
    period: Period


class TrendPoint(ApiModel):
    """One UTC hour; hours without data have requests 0 and nulls."""

    hour: datetime
    requests: int
    uptime: float | None
    avg_response_time: float | None
    p95_response_time: float | None


class Trend(StaleModel):
    """An hourly series, oldest first, one point per hour of the window."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "serviceId": "face-compare",
                    "hours": 2,
                    "points": [
                        {
                            "hour": "2026-01-30T10:00:00Z",
                            "requests": 120,
                            "uptime": 100.0,
                            "avgResponseTime": 231.5,
                            "p95ResponseTime": 390.2,
                        },
                        {
                            "hour": "2026-01-30T11:00:00Z",
                            "requests": 0,
                            "uptime": None,
                            "avgResponseTime": None,
                            "p95ResponseTime": None,
                        },
                    ],
                    "stale": False,
                    "computedAt": "2026-01-30T11:30:00Z",
                }
            ]
        }
    )

    service_id: str
    hours: int
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


class ProberStatus(ApiModel):
    """A prober heard from in the last 24 hours (its newest recorded check)."""

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
