"""Turning message bytes into events, or into the reason they cannot be recorded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TypeVar

from pydantic import ValidationError

from services.recorder.partitions import PartitionKeeper
from services.recorder.wire import WireCheck, decode_fast, from_model
from shared.events import SCHEMA_VERSION, CheckCompleted, ServiceDefined, WireModel

M = TypeVar("M", bound=WireModel)


@dataclass(frozen=True)
class Rejected:
    """A message that goes to the dead-letter subject: `kind` is a metric label, `reason` text."""

    kind: str
    reason: str


@dataclass(frozen=True)
class Expired:
    """A result older than retention: its partition is (or will be) dropped anyway."""


def _validation_reason(exc: ValidationError) -> str:
    errs = exc.errors()
    first = errs[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"invalid {where}: {first['msg']}{more}"


def _too_new(version: int) -> Rejected:
    return Rejected(
        "unsupported_version", f"schemaVersion {version} is newer than supported ({SCHEMA_VERSION})"
    )


def decode_event(data: bytes, model: type[M]) -> M | Rejected:
    """The event in `data`, or why it is malformed (bad JSON, bad fields, newer schema)."""
    try:
        event = model.model_validate_json(data)
    except ValidationError as exc:
        failure = exc
    else:
        version = getattr(event, "schema_version", SCHEMA_VERSION)
        return _too_new(version) if version > SCHEMA_VERSION else event
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return Rejected("invalid_json", f"not JSON: {exc}"[:500])
    version = raw.get("schemaVersion") if isinstance(raw, dict) else None
    if isinstance(version, int) and version > SCHEMA_VERSION:
        return _too_new(version)
    return Rejected("invalid_schema", _validation_reason(failure)[:500])


def decode_check(
    data: bytes, *, partitions: PartitionKeeper
) -> CheckCompleted | Rejected | Expired:
    """A check to store, or why not (malformed, past retention, dated too far ahead)."""
    event = decode_event(data, CheckCompleted)
    if isinstance(event, Rejected):
        return event
    placed = _placed(event.started_at, event.started_at.astimezone(UTC).date(), partitions)
    return event if placed is None else placed


def _placed(started: datetime, day: date, partitions: PartitionKeeper) -> Rejected | Expired | None:
    """Why a check of `day` cannot be stored (past retention, too far ahead), or None."""
    match partitions.classify(day):
        case "expired":
            return Expired()
        case "future":
            _, last = partitions.window()
            return Rejected(
                "future", f"startedAt {started.isoformat()} is after {last} (clock skew?)"
            )
    return None


def decode_check_fast(
    data: bytes, *, partitions: PartitionKeeper
) -> WireCheck | Rejected | Expired:
    """As decode_check, with the strict msgspec decoder first and pydantic for the rest."""
    check = decode_fast(data)
    if check is None:
        event = decode_check(data, partitions=partitions)
        return from_model(event) if isinstance(event, CheckCompleted) else event
    if check.schema_version > SCHEMA_VERSION:
        return _too_new(check.schema_version)
    assert check.utc_day is not None  # set by decode_fast
    placed = _placed(check.started_at, check.utc_day, partitions)
    return check if placed is None else placed


def decode_service(data: bytes) -> ServiceDefined | Rejected:
    """A service definition to apply, or why it is malformed."""
    return decode_event(data, ServiceDefined)
