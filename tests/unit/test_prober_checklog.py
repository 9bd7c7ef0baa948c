"""The per-check log line: every failure and change at INFO or above, healthy repeats at DEBUG."""

from __future__ import annotations

import logging

import httpx
import pytest

from services.prober.catalog import parse_catalog
from services.prober.probe import RequestCache
from services.prober.service import _log_check
from shared.settings import Settings
from tests.factories import make_check_completed, make_endpoint_result

LOGGER = "services.prober.service"


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict[str, object]]]:
    return [(r.levelname, getattr(r, "fields", {})) for r in caplog.records if r.name == LOGGER]


def test_a_healthy_check_like_the_last_one_is_debug_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    _log_check(make_check_completed(status="up"), previous="up")
    assert lines(caplog) == []
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    _log_check(make_check_completed(status="up"), previous="up")
    assert [level for level, _ in lines(caplog)] == ["DEBUG"]


def test_failures_changes_degraded_and_manual_checks_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    failed = make_endpoint_result(
        ok=False, status_code=503, error_type="http_status", error_message="status 503"
    )
    slow = make_endpoint_result(response_time_ms=2000.0, latency_threshold_ms=1000.0)
    _log_check(make_check_completed(status="up"), previous=None)  # first after start: quiet
    _log_check(make_check_completed(status="down", endpoints=[failed]), previous=None)
    _log_check(make_check_completed(status="down", endpoints=[failed]), previous="up")
    _log_check(make_check_completed(status="down", endpoints=[failed]), previous="down")
    _log_check(make_check_completed(status="up"), previous="down")
    _log_check(make_check_completed(status="degraded", endpoints=[slow]), previous="degraded")
    _log_check(make_check_completed(status="up", trigger="manual"), previous="up")
    got = [(level, f["status"], f.get("was"), f.get("error")) for level, f in lines(caplog)]
    assert got == [
        ("WARNING", "down", None, "http_status"),
        ("WARNING", "down", "up", "http_status"),
        ("WARNING", "down", None, "http_status"),
        ("INFO", "up", "down", None),
        ("INFO", "degraded", None, None),
        ("INFO", "up", None, None),
    ]


def test_a_request_is_built_once_per_endpoint_and_again_after_a_reload() -> None:
    settings = Settings(region="t", prober_id="p")
    text = "services:\n  - id: a\n    endpoints: [{name: h, url: 'http://127.0.0.1:9/h'}]\n"
    first = parse_catalog(text, label="t.yaml", settings=settings, env={}).services[0]
    reloaded = parse_catalog(text, label="t.yaml", settings=settings, env={}).services[0]
    client = httpx.AsyncClient(headers={"User-Agent": "probe-test"})
    cache = RequestCache(client=client)
    request = cache.get(first.endpoints[0])
    assert cache.get(first.endpoints[0]) is request
    assert request.headers["User-Agent"] == "probe-test"  # the client's defaults merged in
    assert str(request.url) == "http://127.0.0.1:9/h"
    assert cache.get(reloaded.endpoints[0]) is not request  # a new catalog's endpoint object
