"""The prober's msgspec structs publish exactly what the pydantic contract models would."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from pydantic import BaseModel

from services.prober import wire
from shared.events import CheckCompleted, EndpointResult, EndpointTimings

PAIRS: list[tuple[type[msgspec.Struct], type[BaseModel]]] = [
    (wire.Check, CheckCompleted),
    (wire.Endpoint, EndpointResult),
    (wire.Timings, EndpointTimings),
]


@pytest.mark.parametrize(("struct", "model"), PAIRS, ids=lambda t: t.__name__)
def test_the_structs_have_the_models_fields_names_order_and_defaults(
    struct: type[msgspec.Struct], model: type[BaseModel]
) -> None:
    info = msgspec.structs.fields(struct)
    assert [f.encode_name for f in info] == [
        f.alias or name for name, f in model.model_fields.items()
    ]
    assert [f.name for f in info] == list(model.model_fields)
    for f in info:
        model_field = model.model_fields[f.name]
        if model_field.is_required():
            assert f.required, f.name
        else:
            assert f.default == model_field.default, f.name


def full_check(**changes: object) -> wire.Check:
    endpoint = wire.Endpoint(
        name="health",
        method="POST",
        url="https://api.example.com/health?token=***",
        status_code=503,
        response_time_ms=1234.5678,
        ok=False,
        error_type="assertion",
        error_message="condition '[BODY].status == UP' failed: \"DOWN\" \u2713",
        latency_threshold_ms=500.0,
        failed_condition="[BODY].status == UP",
        timings=wire.Timings(dns_ms=0.25, connect_ms=3.0, ttfb_ms=1200.125, reused=False),
        cert_expires_at=datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    fields: dict[str, object] = {
        "check_id": uuid.uuid4(),
        "service_id": "payments-api",
        "region": "eu-west",
        "prober_id": "prober-0",
        "trigger": "manual",
        "scheduled_at": datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC),
        "started_at": datetime(2026, 11, 26, 12, 0, 0, 130000, tzinfo=UTC),
        "duration_ms": 1240.0,
        "status": "down",
        "endpoints": [
            endpoint,
            wire.Endpoint(name="b", method="GET", url="u", ok=True, response_time_ms=0.0),
        ],
    }
    fields.update(changes)
    return wire.Check(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "check",
    [
        full_check(),
        full_check(scheduled_at=None, trigger="scheduled", status="up"),
        full_check(started_at=datetime(2026, 1, 1, 1, 0, tzinfo=UTC) + timedelta(microseconds=1)),
        full_check(started_at=datetime(2026, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=1)))),
    ],
)
def test_the_bytes_are_the_models_bytes(check: wire.Check) -> None:
    event = check.to_event()
    assert check.to_wire() == event.to_wire()
    assert event.check_id == check.check_id
    assert event.endpoints[0].cert_expires_at == check.endpoints[0].cert_expires_at
    assert event.endpoints[0].timings == EndpointTimings(
        dns_ms=0.25, connect_ms=3.0, ttfb_ms=1200.125, reused=False
    )
    assert [e.within_threshold for e in event.endpoints] == [
        e.within_threshold for e in check.endpoints
    ]


def test_a_struct_the_contract_refuses_is_an_error_not_a_publish() -> None:
    with pytest.raises(ValueError, match="endpoints"):
        full_check(endpoints=[]).to_event()


def test_check_ids_are_distinct_version_4_uuids() -> None:
    ids = [wire.new_check_id() for _ in range(20_000)]  # several pools of random bytes
    assert len(set(ids)) == len(ids)
    for text in ids[:600]:
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 4, uuid.RFC_4122)
