"""The public event contract: subjects, streams and pydantic models (camelCase on the wire).

Compatibility rule: adding an optional field is compatible; renaming, removing or changing
the meaning of a field bumps `SCHEMA_VERSION`. Consumers ignore fields they do not know.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

SCHEMA_VERSION = 1

# Subjects. `<serviceId>` is the catalog slug, so a subscriber can filter per service.
CHECK_SUBJECT = "watch.check.{service_id}"
CHECK_SUBJECTS = "watch.check.>"
SERVICE_SUBJECT = "watch.service.{service_id}"
SERVICE_SUBJECTS = "watch.service.>"
STATUS_SUBJECT = "watch.event.status.{service_id}"
SLA_SUBJECT = "watch.event.sla.{service_id}"
EVENT_SUBJECTS = "watch.event.>"
PROBE_RUN_SUBJECT = "watch.probe.run"
DLQ_SUBJECT = "watch.dlq.{consumer}"
DLQ_SUBJECTS = "watch.dlq.>"

# Streams: declared once, in shared.streams.
CHECKS_STREAM = "WATCH_CHECKS"
SERVICES_STREAM = "WATCH_SERVICES"
EVENTS_STREAM = "WATCH_EVENTS"
DLQ_STREAM = "WATCH_DLQ"

# Headers on dead-lettered messages (the body is the original bytes, unchanged).
DLQ_REASON_HEADER = "Watch-Dlq-Reason"
DLQ_SUBJECT_HEADER = "Watch-Dlq-Subject"
DLQ_CONSUMER_HEADER = "Watch-Dlq-Consumer"

CheckStatus = Literal["up", "degraded", "down"]
ErrorType = Literal["timeout", "connection", "dns", "tls", "http_status", "assertion", "other"]
ERROR_TYPES: tuple[str, ...] = ErrorType.__args__  # type: ignore[attr-defined]
Trigger = Literal["scheduled", "manual"]


def within_threshold(ok: bool, response_time_ms: float, latency_threshold_ms: float | None) -> bool:
    """True when a call succeeded no slower than its latency threshold (else: degraded)."""
    return ok and (latency_threshold_ms is None or response_time_ms <= latency_threshold_ms)


class WireModel(BaseModel):
    """camelCase aliases on the wire, snake_case in Python; unknown fields ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    def to_wire(self) -> bytes:
        """The JSON bytes published on NATS."""
        return self.model_dump_json(by_alias=True).encode()


class EndpointTimings(WireModel):
    """Phases of one HTTP call in ms from its start, where the transport reports them."""

    dns_ms: float | None = Field(
        default=None, description="Name resolution; null when cached, an IP, or not measured."
    )
    connect_ms: float | None = Field(
        default=None,
        description="Opening a new connection: TCP connect plus the TLS handshake for https; "
        "null when a kept-alive connection was reused.",
    )
    ttfb_ms: float | None = Field(
        default=None,
        description="From the start of the call until the status line and headers arrived.",
    )
    reused: bool | None = Field(
        default=None, description="True when a kept-alive connection was reused."
    )


class EndpointResult(WireModel):
    """One HTTP call of a check."""

    name: str
    method: str
    url: str = Field(description="The URL called, with credentials and query secrets removed.")
    status_code: int | None = Field(default=None, description="HTTP status, null when none came.")
    response_time_ms: float = Field(ge=0, description="From request start to full response, ms.")
    ok: bool
    error_type: ErrorType | None = None
    error_message: str | None = None
    latency_threshold_ms: float | None = Field(
        default=None, description="Slower than this (while ok) makes the check degraded."
    )
    failed_condition: str | None = Field(
        default=None,
        description="With errorType assertion: the catalog condition that failed, as written.",
    )
    timings: EndpointTimings | None = Field(
        default=None, description="Per-phase timings, when the transport reports them."
    )
    cert_expires_at: AwareDatetime | None = Field(
        default=None, description="https only: when the server certificate expires (notAfter)."
    )

    @property
    def within_threshold(self) -> bool:
        """True when the call succeeded no slower than its latency threshold."""
        return within_threshold(self.ok, self.response_time_ms, self.latency_threshold_ms)


class CheckCompleted(WireModel):
    """A finished check of one service: published on `watch.check.<serviceId>`."""

    schema_version: int = SCHEMA_VERSION
    check_id: UUID = Field(description="Idempotency key everywhere; also the Nats-Msg-Id.")
    service_id: str
    region: str
    prober_id: str
    trigger: Trigger = "scheduled"
    scheduled_at: AwareDatetime | None = Field(default=None, description="When it was due.")
    started_at: AwareDatetime
    duration_ms: float = Field(ge=0)
    status: CheckStatus
    endpoints: list[EndpointResult] = Field(min_length=1)


class EndpointDefinition(WireModel):
    """An endpoint as the catalog defines it (headers and body are not published)."""

    name: str
    method: str
    url: str
    expected_status: list[str] = Field(default_factory=lambda: ["200-299"])
    latency_threshold_ms: float | None = None


class ServiceDefined(WireModel):
    """A catalog entry as last published: `watch.service.<serviceId>`, last one per subject kept."""

    schema_version: int = SCHEMA_VERSION
    service_id: str
    name: str
    description: str = ""
    active: bool = True
    interval_seconds: float
    timeout_ms: int
    sla_target: float
    endpoints: list[EndpointDefinition] = Field(default_factory=list)
    defined_at: AwareDatetime


class StatusChanged(WireModel):
    """A service's check status changed: `watch.event.status.<serviceId>`."""

    schema_version: int = SCHEMA_VERSION
    service_id: str
    from_status: CheckStatus | None = Field(alias="from", description="Null for the first check.")
    to_status: CheckStatus = Field(alias="to")
    at: AwareDatetime
    check_id: UUID
    regions: dict[str, CheckStatus] | None = Field(
        default=None,
        description=(
            "With probers in several regions: each voting region's latest status "
            "(the service is down when at least half of them are down)."
        ),
    )


class SlaWindow(WireModel):
    """The rolling window an SLA figure was computed over."""

    days: int
    start: datetime
    end: datetime


class SlaBreached(WireModel):
    """Uptime over the SLA window fell below the target: `watch.event.sla.<serviceId>`."""

    schema_version: int = SCHEMA_VERSION
    kind: Literal["breached"] = "breached"
    service_id: str
    target: float
    current: float
    window: SlaWindow
    at: AwareDatetime


class SlaRecovered(WireModel):
    """Uptime over the SLA window is back at or above the target."""

    schema_version: int = SCHEMA_VERSION
    kind: Literal["recovered"] = "recovered"
    service_id: str
    target: float
    current: float
    window: SlaWindow
    at: AwareDatetime


class ProbeRunRequest(WireModel):
    """Request on `watch.probe.run`: one service, or every service when `serviceId` is null."""

    service_id: str | None = None


class ProbeRunReply(WireModel):
    """Reply on `watch.probe.run`: the results, or an error for an unknown service."""

    results: list[CheckCompleted] = Field(default_factory=list)
    error: str | None = None


def check_subject(service_id: str) -> str:
    """The subject a check of this service is published on."""
    return CHECK_SUBJECT.format(service_id=service_id)
