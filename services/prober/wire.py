"""The prober's results as msgspec structs: CheckCompleted built and encoded cheaply.

Building the pydantic `CheckCompleted` (three validated models) and dumping it to JSON cost
~12 µs per check in a tight loop and several times that at 1,700 checks/s, when little of
it is in the CPU's caches. These structs mirror `shared.events.CheckCompleted`,
`EndpointResult` and `EndpointTimings` field for field, in the same order and with the
same camelCase names, and msgspec encodes them in one call. The pydantic models stay the
contract: `Check.to_event()` decodes the encoded bytes with them (manual runs answer with
it, and the tests' `run_check` returns it, so every test of a check also validates what is
published),
and tests/unit/test_prober_wire.py holds the structs to the models' fields.
"""

from __future__ import annotations

import os
from datetime import datetime
from uuid import UUID

import msgspec

from shared.events import (
    SCHEMA_VERSION,
    CheckCompleted,
    CheckStatus,
    ErrorType,
    Trigger,
    within_threshold,
)

_encode = msgspec.json.Encoder().encode
_POOL = 4096  # random bytes drawn from the OS at once: 256 check ids


class _CheckIds:
    """Random (version 4) UUIDs as text, from pooled `os.urandom` bytes.

    `str(uuid.uuid4())` asks the kernel for 16 bytes and builds a UUID object per check;
    this asks for 4 KiB every 256 ids and formats the text directly (same randomness).
    """

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def __call__(self) -> str:
        at = self._at
        if at >= len(self._pool):
            self._pool, at = os.urandom(_POOL), 0
        self._at = at + 16
        n = int.from_bytes(self._pool[at : at + 16], "big")
        n = (n & _KEEP) | _VERSION_4
        h = f"{n:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# RFC 4122: version nibble 4 (bits 76-79), variant bits 10 (bits 62-63).
_KEEP = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_VERSION_4 = (0x4 << 76) | (0x2 << 62)
new_check_id = _CheckIds()
"""A new checkId (uuid4 text)."""


class Timings(msgspec.Struct, rename="camel", gc=False):
    """EndpointTimings."""

    dns_ms: float | None = None
    connect_ms: float | None = None
    ttfb_ms: float | None = None
    reused: bool | None = None


class Endpoint(msgspec.Struct, rename="camel", gc=False, kw_only=True):
    """EndpointResult."""

    name: str
    method: str
    url: str
    status_code: int | None = None
    response_time_ms: float
    ok: bool
    error_type: ErrorType | None = None
    error_message: str | None = None
    latency_threshold_ms: float | None = None
    failed_condition: str | None = None
    timings: Timings | None = None
    cert_expires_at: datetime | None = None

    @property
    def within_threshold(self) -> bool:
        """True when the call succeeded no slower than its latency threshold."""
        return within_threshold(self.ok, self.response_time_ms, self.latency_threshold_ms)


class Check(msgspec.Struct, rename="camel", gc=False, kw_only=True):
    """CheckCompleted."""

    schema_version: int = SCHEMA_VERSION
    check_id: UUID | str  # text from new_check_id; a UUID object encodes the same
    service_id: str
    region: str
    prober_id: str
    trigger: Trigger = "scheduled"
    scheduled_at: datetime | None = None
    started_at: datetime
    duration_ms: float
    status: CheckStatus
    endpoints: list[Endpoint]

    def to_wire(self) -> bytes:
        """The JSON bytes published on NATS (what CheckCompleted.to_wire gives, same fields)."""
        return _encode(self)

    def to_event(self) -> CheckCompleted:
        """The contract's model of this check, validated."""
        return CheckCompleted.model_validate_json(_encode(self))
