"""Plain factory functions for test data."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from services.prober.probe import probe_service
from shared.events import CheckCompleted, EndpointResult, ServiceDefined


def make_endpoint_result(**overrides: Any) -> EndpointResult:
    """A successful GET call of 12.5 ms, unless overridden."""
    data: dict[str, Any] = {
        "name": "health",
        "method": "GET",
        "url": "http://127.0.0.1:9/health",
        "status_code": 200,
        "response_time_ms": 12.5,
        "ok": True,
        "error_type": None,
        "error_message": None,
        "latency_threshold_ms": 1000.0,
    }
    data.update(overrides)
    return EndpointResult(**data)


def make_check_completed(**overrides: Any) -> CheckCompleted:
    """An `up` check of service `svc-a` now, unless overridden."""
    now = datetime.now(UTC)
    data: dict[str, Any] = {
        "check_id": uuid.uuid4(),
        "service_id": "svc-a",
        "region": "test",
        "prober_id": "prober-test",
        "trigger": "scheduled",
        "scheduled_at": now,
        "started_at": now,
        "duration_ms": 12.5,
        "status": "up",
        "endpoints": [make_endpoint_result()],
    }
    data.update(overrides)
    return CheckCompleted(**data)


def make_service_defined(**overrides: Any) -> ServiceDefined:
    """An active service `svc-a` with one endpoint and a 99.9 % target, unless overridden."""
    data: dict[str, Any] = {
        "service_id": "svc-a",
        "name": "Service A",
        "interval_seconds": 30.0,
        "timeout_ms": 10000,
        "sla_target": 99.9,
        "endpoints": [{"name": "health", "method": "GET", "url": "http://127.0.0.1:9/health"}],
        "defined_at": datetime.now(UTC),
    }
    data.update(overrides)
    return ServiceDefined(**data)


async def run_check(*args: Any, **kwargs: Any) -> CheckCompleted:
    """A prober check as its consumers see it: the published bytes, validated by the model."""
    return (await probe_service(*args, **kwargs)).to_event()
