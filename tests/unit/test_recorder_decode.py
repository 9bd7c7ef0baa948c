"""Decoding, the partition window and the row mapping of the recorder (no I/O)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

from faststream.specification import AsyncAPI

from services.recorder.broker import build_broker
from services.recorder.decode import Expired, Rejected, decode_check, decode_service
from services.recorder.partitions import PartitionKeeper
from services.recorder.storage import (
    CHECK_COLUMNS,
    ENDPOINT_COLUMNS,
    ERROR_CODES,
    STATUS_CODES,
    Refs,
    check_rows,
)
from shared.events import ERROR_TYPES, CheckCompleted, ServiceDefined
from shared.settings import Settings
from tests.factories import make_check_completed, make_endpoint_result, make_service_defined

TODAY = date(2026, 3, 10)


def keeper() -> PartitionKeeper:
    return PartitionKeeper(retention_days=30, today=lambda: TODAY)


def at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


def test_a_valid_check_decodes() -> None:
    check = make_check_completed(started_at=at(TODAY))
    assert decode_check(check.to_wire(), partitions=keeper()) == check


def test_malformed_checks_are_rejected_with_a_reason() -> None:
    good = json.loads(make_check_completed(started_at=at(TODAY)).to_wire())
    no_status = {k: v for k, v in good.items() if k != "status"}
    cases = {
        b"{oops": "invalid_json",
        b"\xff\xfe": "invalid_json",
        b"[1, 2]": "invalid_schema",
        json.dumps(no_status).encode(): "invalid_schema",
        json.dumps(good | {"status": "sideways"}).encode(): "invalid_schema",
        json.dumps(good | {"endpoints": []}).encode(): "invalid_schema",
        json.dumps(good | {"schemaVersion": 2}).encode(): "unsupported_version",
        json.dumps(no_status | {"schemaVersion": 7}).encode(): "unsupported_version",
    }
    for data, kind in cases.items():
        result = decode_check(data, partitions=keeper())
        assert isinstance(result, Rejected), data
        assert result.kind == kind, (data, result)
    missing = decode_check(json.dumps(no_status).encode(), partitions=keeper())
    assert isinstance(missing, Rejected) and "status" in missing.reason


def test_the_partition_window_decides_expired_and_future() -> None:
    k = keeper()
    assert k.window() == (TODAY - timedelta(days=30), TODAY + timedelta(days=7))
    edge_old = make_check_completed(started_at=at(TODAY - timedelta(days=30)))
    too_old = make_check_completed(started_at=at(TODAY - timedelta(days=31)))
    edge_new = make_check_completed(started_at=at(TODAY + timedelta(days=7)))
    too_new = make_check_completed(started_at=at(TODAY + timedelta(days=8)))
    assert isinstance(decode_check(edge_old.to_wire(), partitions=k), CheckCompleted)
    assert isinstance(decode_check(too_old.to_wire(), partitions=k), Expired)
    assert isinstance(decode_check(edge_new.to_wire(), partitions=k), CheckCompleted)
    future = decode_check(too_new.to_wire(), partitions=k)
    assert isinstance(future, Rejected) and future.kind == "future"


def test_started_at_is_placed_by_its_utc_day() -> None:
    from datetime import timezone

    # 01:00 on day+8 at UTC+5 is 20:00 UTC on day+7: inside the window.
    local = datetime(2026, 3, 18, 1, tzinfo=timezone(timedelta(hours=5)))
    check = make_check_completed(started_at=local)
    assert isinstance(decode_check(check.to_wire(), partitions=keeper()), CheckCompleted)


def test_service_definitions_decode() -> None:
    service = make_service_defined()
    assert decode_service(service.to_wire()) == service
    bad = decode_service(b'{"serviceId": "x"}')
    assert isinstance(bad, Rejected) and bad.kind == "invalid_schema"
    assert isinstance(decode_service(b"nope"), Rejected)
    assert isinstance(decode_service(service.to_wire()), ServiceDefined)


def _refs(*checks: CheckCompleted) -> Refs:
    refs = Refs()
    for n, c in enumerate(checks):
        refs.services[c.service_id] = 7
        refs.sources[(c.region, c.prober_id)] = 9
        for i, e in enumerate(c.endpoints):
            refs.endpoints[(c.service_id, e.name, e.method)] = 10 * n + i
    return refs


def test_rows_carry_the_check_and_its_first_failure() -> None:
    ok = make_endpoint_result(name="a")
    slow = make_endpoint_result(name="b", response_time_ms=900.0, latency_threshold_ms=500.0)
    dns = make_endpoint_result(
        name="c", ok=False, status_code=None, error_type="dns", error_message="no such host\x00"
    )
    tls = make_endpoint_result(name="d", ok=False, error_type="tls", error_message="bad cert")
    check = make_check_completed(status="down", duration_ms=1234.5, endpoints=[ok, slow, dns, tls])
    rows, calls = check_rows([check], _refs(check))
    row = dict(zip(CHECK_COLUMNS, rows[0], strict=True))
    assert row["check_id"] == check.check_id and row["started_at"] == check.started_at
    assert (row["service_ref"], row["source_ref"]) == (7, 9)
    assert (row["response_time_ms"], row["endpoint_ref"], row["status_code"]) == (
        1234.5,
        None,
        None,
    )
    assert (row["endpoint_count"], row["failed_count"], row["status"]) == (4, 2, b"d")
    assert (row["error_type"], row["error_message"]) == (b"n", "no such host")
    assert (row["trigger"], row["within_threshold"]) == (b"s", False)

    cols = [dict(zip(ENDPOINT_COLUMNS, c, strict=True)) for c in calls]
    assert [c["endpoint_index"] for c in cols] == [0, 1, 2, 3]
    assert [c["endpoint_ref"] for c in cols] == [0, 1, 2, 3]
    assert [c["ok"] for c in cols] == [True, True, False, False]
    assert [c["within_threshold"] for c in cols] == [True, False, False, False]
    assert [c["error_type"] for c in cols] == [None, None, b"n", b"s"]


def test_a_one_endpoint_check_is_one_row_with_its_call() -> None:
    call = make_endpoint_result(status_code=503, ok=False, error_type="http_status")
    check = make_check_completed(
        status="down", duration_ms=99.0, trigger="manual", endpoints=[call]
    )
    rows, calls = check_rows([check], _refs(check))
    row = dict(zip(CHECK_COLUMNS, rows[0], strict=True))
    assert calls == []  # the check row holds the call: no endpoint_results row
    assert (row["response_time_ms"], row["endpoint_ref"], row["status_code"]) == (12.5, 0, 503)
    assert (row["error_type"], row["trigger"], row["within_threshold"]) == (b"h", b"m", False)
    assert set(STATUS_CODES) == {"up", "degraded", "down"}
    assert set(ERROR_CODES) == set(ERROR_TYPES)


def test_the_broker_declares_every_subject_for_the_asyncapi_document() -> None:
    doc = json.loads(AsyncAPI(build_broker(Settings())).to_specification().to_json())
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {"watch.check.>", "watch.service.>", "watch.dlq.recorder"}
    assert {"CheckCompleted", "ServiceDefined"} <= set(doc["components"]["schemas"])
