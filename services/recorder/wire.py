"""A fast decoder for CheckCompleted: msgspec structs that accept a subset of what pydantic does.

The recorder validates every result, and pydantic's `model_validate_json` was its largest
cost per result. These structs mirror `shared.events.CheckCompleted` field for field (names,
types, required/optional, `ge=0`, `min_length=1`, the literals), but strictly: JSON types
only, camelCase keys only. Timestamps are parsed by pydantic's own datetime validator, so a
stored `startedAt` is the same instant either way. Whatever these structs refuse (a lax
value such as `"200"` for an int, a snake_case key, a malformed message) is decoded again by
pydantic, which stays the authority: it accepts the lax input or gives the reason for the
dead-letter subject. `tests/unit/test_recorder_wire.py` holds the two decoders to the same
answers.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from pydantic import AwareDatetime, TypeAdapter
from pydantic.alias_generators import to_camel

from shared.events import CheckCompleted, EndpointResult, within_threshold

NonNegative = Annotated[float, msgspec.Meta(ge=0)]
ErrorType = Literal["timeout", "connection", "dns", "tls", "http_status", "assertion", "other"]

_aware = TypeAdapter(AwareDatetime)
# pydantic also accepts the snake_case field names (populate_by_name); these structs do not,
# so a message with a key that ends like one of them (`schema_version`, `check_id`,
# `started_at`, `duration_ms`, `status_code`, `error_type`, `error_message`,
# `failed_condition`, ...) goes to pydantic. Starting at "_" keeps the scan a fast one.
_SNAKE_KEY = re.compile(rb'_(?:version|id|at|ms|code|type|message|condition)"\s*:')


class WireTimings(msgspec.Struct, rename="camel", gc=False):
    """EndpointTimings."""

    dns_ms: float | None = None
    connect_ms: float | None = None
    ttfb_ms: float | None = None
    reused: bool | None = None


class WireEndpoint(msgspec.Struct, rename="camel", gc=False):
    """EndpointResult, as the recorder reads it."""

    name: str
    method: str
    url: str
    response_time_ms: NonNegative
    ok: bool
    status_code: int | None = None
    error_type: ErrorType | None = None
    error_message: str | None = None
    latency_threshold_ms: float | None = None
    failed_condition: str | None = None
    timings: WireTimings | None = None
    cert_expires_at: str | None = None  # checked by pydantic's parser, see decode_fast

    @property
    def within_threshold(self) -> bool:
        """True when the call succeeded no slower than its latency threshold."""
        return within_threshold(self.ok, self.response_time_ms, self.latency_threshold_ms)


def _wire_name(field: str) -> str:
    return "startedAt" if field == "started_at_text" else to_camel(field)


class WireCheck(msgspec.Struct, rename=_wire_name):
    """CheckCompleted, with `startedAt` kept as text until decode_fast parses it."""

    check_id: UUID
    service_id: str
    region: str
    prober_id: str
    started_at_text: str
    duration_ms: NonNegative
    status: Literal["up", "degraded", "down"]
    endpoints: Annotated[list[WireEndpoint], msgspec.Meta(min_length=1)]
    schema_version: int = 1
    trigger: Literal["scheduled", "manual"] = "scheduled"
    scheduled_at: str | None = None
    # Not on the wire (a key of these names is overwritten): set by decode_fast.
    started: datetime | None = None  # startedAt parsed
    utc_day: date | None = None  # its UTC day: the partition

    @property
    def started_at(self) -> datetime:
        """When the check started (an aware datetime, as CheckCompleted.started_at)."""
        assert self.started is not None, "set by decode_fast"
        return self.started


_decoder = msgspec.json.Decoder(WireCheck)


def decode_fast(data: bytes) -> WireCheck | None:
    """The check in `data` when the strict decoder takes it; None means: ask pydantic."""
    try:
        check = _decoder.decode(data)
        check.started = started = _aware.validate_python(check.started_at_text)
        check.utc_day = started.astimezone(UTC).date()
        if check.scheduled_at is not None:
            _aware.validate_python(check.scheduled_at)
        for e in check.endpoints:
            if e.cert_expires_at is not None:
                _aware.validate_python(e.cert_expires_at)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError):
        return None
    if _SNAKE_KEY.search(data):
        return None
    return check


def from_model(event: CheckCompleted) -> WireCheck:
    """The same check as a WireCheck (for what only pydantic accepted)."""
    check = WireCheck(
        check_id=event.check_id,
        service_id=event.service_id,
        region=event.region,
        prober_id=event.prober_id,
        started_at_text=event.started_at.isoformat(),
        duration_ms=event.duration_ms,
        status=event.status,
        endpoints=[_endpoint(e) for e in event.endpoints],
        schema_version=event.schema_version,
        trigger=event.trigger,
        scheduled_at=event.scheduled_at.isoformat() if event.scheduled_at else None,
    )
    check.started = event.started_at
    check.utc_day = event.started_at.astimezone(UTC).date()
    return check


def _endpoint(e: EndpointResult) -> WireEndpoint:
    return WireEndpoint(
        name=e.name,
        method=e.method,
        url=e.url,
        response_time_ms=e.response_time_ms,
        ok=e.ok,
        status_code=e.status_code,
        error_type=e.error_type,
        error_message=e.error_message,
        latency_threshold_ms=e.latency_threshold_ms,
        failed_condition=e.failed_condition,
        cert_expires_at=e.cert_expires_at.isoformat() if e.cert_expires_at else None,
    )
