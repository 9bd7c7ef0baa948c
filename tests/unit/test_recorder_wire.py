"""The recorder's fast decoder gives pydantic's answers: the same values, or the same rejection."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from services.recorder.decode import Expired, Rejected, decode_check, decode_check_fast
from services.recorder.partitions import PartitionKeeper
from services.recorder.wire import WireCheck, WireEndpoint, WireTimings, decode_fast
from shared.events import CheckCompleted, EndpointResult, EndpointTimings
from tests.factories import make_check_completed, make_endpoint_result

TODAY = date(2026, 3, 10)
NOON = datetime(2026, 3, 10, 12, tzinfo=UTC)


def keeper() -> PartitionKeeper:
    return PartitionKeeper(retention_days=30, today=lambda: TODAY)


def same_check(fast: WireCheck, slow: CheckCompleted) -> None:
    """Every value the recorder stores is equal."""
    for field in ("check_id", "service_id", "region", "prober_id", "started_at", "duration_ms"):
        assert getattr(fast, field) == getattr(slow, field), field
    assert fast.utc_day == slow.started_at.astimezone(UTC).date()
    assert fast.started_at.utcoffset() == slow.started_at.utcoffset()
    assert (fast.status, fast.trigger, fast.schema_version) == (
        slow.status,
        slow.trigger,
        slow.schema_version,
    )
    assert len(fast.endpoints) == len(slow.endpoints)
    for f, s in zip(fast.endpoints, slow.endpoints, strict=True):
        for field in (
            "name",
            "method",
            "url",
            "response_time_ms",
            "ok",
            "status_code",
            "error_type",
            "error_message",
            "latency_threshold_ms",
            "failed_condition",
            "within_threshold",
        ):
            assert getattr(f, field) == getattr(s, field), field


def both(data: bytes) -> tuple[Any, Any]:
    return decode_check_fast(data, partitions=keeper()), decode_check(data, partitions=keeper())


def agree(data: bytes) -> Any:
    """Assert both decoders give the same answer; return pydantic's."""
    fast, slow = both(data)
    if isinstance(slow, CheckCompleted):
        assert isinstance(fast, WireCheck), (data, fast)
        same_check(fast, slow)
    else:
        assert fast == slow, data  # the same Rejected (kind and reason) or Expired
    return slow


VALID = [
    make_check_completed(started_at=NOON),
    make_check_completed(started_at=NOON, scheduled_at=None, trigger="manual"),
    make_check_completed(
        started_at=datetime(2026, 3, 10, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5))),
        status="down",
        endpoints=[
            make_endpoint_result(name="a", timings=EndpointTimings(dns_ms=1.5, reused=False)),
            make_endpoint_result(
                name="b\x00",
                ok=False,
                status_code=None,
                error_type="timeout",
                error_message="timed out 🙃",
                latency_threshold_ms=None,
                cert_expires_at=NOON + timedelta(days=90),
            ),
            make_endpoint_result(
                name="c", ok=False, error_type="assertion", failed_condition="[BODY].ok == true"
            ),
        ],
    ),
    make_check_completed(
        started_at=NOON,
        status="degraded",
        duration_ms=0,
        endpoints=[make_endpoint_result(response_time_ms=2500.0, latency_threshold_ms=500.0)],
    ),
]


@pytest.mark.parametrize("check", VALID)
def test_what_the_prober_publishes_takes_the_fast_path(check: CheckCompleted) -> None:
    data = check.to_wire()
    fast = decode_fast(data)
    assert fast is not None
    same_check(fast, check)
    agree(data)


def wire(**changes: Any) -> bytes:
    body = json.loads(make_check_completed(started_at=NOON).to_wire())
    body.update(changes)
    return json.dumps(body).encode()


def endpoint(**changes: Any) -> bytes:
    body = json.loads(make_check_completed(started_at=NOON).to_wire())
    body["endpoints"][0].update(changes)
    return json.dumps(body).encode()


def snake(key: str, value: Any, *, in_endpoint: bool = False) -> bytes:
    """The wire form with one field under its snake_case name instead of its camelCase one."""
    body = json.loads(make_check_completed(started_at=NOON).to_wire())
    target = body["endpoints"][0] if in_endpoint else body
    camel = key.split("_")[0] + "".join(w.title() for w in key.split("_")[1:])
    target.pop(camel, None)
    target[key] = value
    return json.dumps(body).encode()


ID = "8c3b2a4e-1f0d-4c6b-9a7e-5d2f1e0c9b8a"
EDGES = [
    # Lax values pydantic accepts and the strict structs do not: same stored values.
    wire(durationMs="12.5"),
    wire(durationMs=12),
    wire(schemaVersion="1"),
    wire(schemaVersion=1.0),
    wire(checkId=ID.upper()),
    wire(checkId=ID.replace("-", "")),
    wire(checkId="urn:uuid:" + ID),
    wire(checkId="{" + ID + "}"),
    wire(startedAt="2026-03-10T12:00:00.1234567Z"),  # pydantic truncates, msgspec would round
    wire(startedAt="2026-03-10T12:00:00.9999999Z"),
    wire(startedAt="2026-03-10T12:00Z"),
    wire(startedAt="2026-03-10 12:00:00z"),
    wire(startedAt="2026-03-10T12:00:00-00:00"),
    wire(startedAt="2026-03-10T12:00:00+23:59"),
    wire(startedAt=1773144000),
    wire(startedAt="1773144000"),
    wire(scheduledAt=1773144000),
    endpoint(statusCode="200"),
    endpoint(statusCode=200.0),
    endpoint(statusCode=2**70),
    endpoint(ok="true"),
    endpoint(ok=1),
    endpoint(responseTimeMs="5"),
    endpoint(latencyThresholdMs=None),
    endpoint(timings={"dnsMs": "1.5"}),
    endpoint(certExpiresAt=1773144000),
    # snake_case names: pydantic takes them (populate_by_name).
    snake("started_at", "2026-03-10T12:00:00Z"),
    snake("error_type", "dns", in_endpoint=True),
    snake("status_code", 503, in_endpoint=True),
    snake("latency_threshold_ms", 1.0, in_endpoint=True),
    snake("schema_version", 2),
    snake("scheduled_at", "nonsense"),
    wire(checkId=ID, check_id="00000000-0000-0000-0000-000000000000"),
    endpoint(error_type="dns", ok=False),  # camelCase errorType (null) is there too
    # Keys pydantic ignores.
    wire(started="not a date", extra={"deep": [1, 2]}),
    wire(started=12),
    wire(utcDay="2020-01-01"),
    wire(utcDay=[]),
    # Duplicate keys: the last one counts.
    wire().replace(b'"status": "up"', b'"status": "down", "status": "up"'),
    # Rejected, with pydantic's reason.
    b"{oops",
    b"\xff\xfe",
    b"[1, 2]",
    b"null",
    b"",
    wire(status="sideways"),
    wire(trigger="cron"),
    wire(endpoints=[]),
    wire(durationMs=-1),
    wire(durationMs=None),
    wire(checkId="not-a-uuid"),
    wire(startedAt="2026-03-10T12:00:00"),  # no offset
    wire(startedAt="2026-03-10T24:00:00Z"),
    wire(startedAt="2026-03-10T12:00:60Z"),
    wire(scheduledAt="yesterday"),
    wire(scheduledAt="2026-03-10T12:00:00"),
    wire(schemaVersion=2),
    wire(schemaVersion=True),
    endpoint(errorType="gremlins"),
    endpoint(responseTimeMs=-0.5),
    endpoint(statusCode=True),
    endpoint(ok=None),
    endpoint(timings={"reused": "maybe"}),
    endpoint(certExpiresAt="2026-06-08T12:00:00"),
    endpoint(certExpiresAt="soon"),
    wire().replace(b'"svc-a"', b'"svc-\\ud800"'),
    wire().replace(b'"durationMs": 12.5', b'"durationMs": NaN'),
    wire().replace(b'"durationMs": 12.5', b'"durationMs": 1e400'),
    # Past retention, or too far ahead.
    wire(startedAt="2026-01-01T00:00:00Z"),
    wire(startedAt="2026-04-01T00:00:00Z"),
]


@pytest.mark.parametrize("data", EDGES, ids=range(len(EDGES)))
def test_edge_cases_get_pydantics_answer(data: bytes) -> None:
    agree(data)


def test_the_edge_cases_cover_each_outcome() -> None:
    answers = [both(d)[1] for d in EDGES]
    assert any(isinstance(a, CheckCompleted) for a in answers)
    assert any(isinstance(a, Expired) for a in answers)
    kinds = {a.kind for a in answers if isinstance(a, Rejected)}
    assert {"invalid_json", "invalid_schema", "unsupported_version", "future"} <= kinds
    # And the strict structs did refuse the lax ones (so the fallback is what was tested).
    assert decode_fast(wire(durationMs="12.5")) is None
    assert decode_fast(snake("error_type", "dns", in_endpoint=True)) is None


@pytest.mark.parametrize(
    ("struct", "model"),
    [
        (WireCheck, CheckCompleted),
        (WireEndpoint, EndpointResult),
        (WireTimings, EndpointTimings),
    ],
)
def test_the_structs_name_every_field_of_the_contract(struct: Any, model: Any) -> None:
    """A field added to the event must be added to its mirror (or the fast path drops it)."""
    on_wire = set(struct.__struct_encode_fields__) - {"started", "utcDay"}
    aliases = {f.alias or name for name, f in model.model_fields.items()}
    assert on_wire == aliases
