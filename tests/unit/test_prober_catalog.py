"""The catalog: what a user writes, what it becomes, and errors that say where and why."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.prober.catalog import (
    CatalogError,
    load_catalog,
    parse_catalog,
    parse_duration,
    redact_url,
    status_matches,
)
from shared.settings import Settings

SETTINGS = Settings(request_timeout=7000, sla_target=99.5)
REPO_CATALOG = Path(__file__).resolve().parents[2] / "services.yaml"

GOOD = """
services:
  - id: face-compare
    name: Face Compare
    interval: 30s
    timeout: 2500ms
    slaTarget: 99.0
    endpoints:
      - name: health
        url: https://user:${PASS}@face.example/health?token=${TOKEN}&v=1
        headers: {Authorization: "Bearer ${TOKEN}"}
        expectedStatus: [200, "3xx", "401-403"]
        latencyThresholdMs: 500
      - name: compare
        url: http://127.0.0.1:3008/compare
        method: post
        json: {a: 1}
  - id: defaults
    endpoints:
      - {name: root, url: "http://127.0.0.1:${PORT:-8080}/"}
"""
ENV = {"PASS": "hunter22", "TOKEN": "tok-secret-123"}


def parse(text: str, env: dict[str, str] | None = None) -> object:
    return parse_catalog(text, label="services.yaml", settings=SETTINGS, env=env or ENV)


def error_of(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(CatalogError) as info:
        parse(text, env)
    return str(info.value)


def test_good_catalog_is_typed_with_defaults_applied() -> None:
    catalog = parse_catalog(GOOD, label="services.yaml", settings=SETTINGS, env=ENV)
    face, defaults = catalog.services
    assert (face.id, face.name, face.interval_seconds, face.timeout_seconds) == (
        "face-compare",
        "Face Compare",
        30.0,
        2.5,
    )
    assert face.sla_target == 99.0
    health, compare = face.endpoints
    assert health.url == "https://user:hunter22@face.example/health?token=tok-secret-123&v=1"
    assert health.headers == {"Authorization": "Bearer tok-secret-123"}
    assert health.expected_status == ("200", "300-399", "401-403")
    assert health.latency_threshold_ms == 500
    assert (compare.method, compare.json_body, compare.expected_status) == (
        "POST",
        {"a": 1},
        ("200-299",),
    )
    # Defaults come from settings: REQUEST_TIMEOUT (ms) and SLA_TARGET.
    assert (defaults.name, defaults.timeout_seconds, defaults.sla_target) == ("defaults", 7.0, 99.5)
    assert defaults.endpoints[0].url == "http://127.0.0.1:8080/"


def test_secrets_never_reach_the_published_definition_or_repr() -> None:
    catalog = parse_catalog(GOOD, label="services.yaml", settings=SETTINGS, env=ENV)
    face = catalog.services[0]
    wire = face.definition(defined_at=datetime.now(UTC)).to_wire().decode()
    for text in (wire, repr(catalog)):
        assert "hunter22" not in text and "tok-secret-123" not in text
    assert face.endpoints[0].display_url == "https://***@face.example/health?token=***&v=***"
    assert face.scrub("401 for tok-secret-123") == "401 for ***"


def test_error_names_file_service_and_field() -> None:
    text = GOOD.replace("url: http://127.0.0.1:3008/compare", "url: ftp://nowhere")
    assert error_of(text) == (
        "services.yaml: service 'face-compare' (services[0]): endpoints[1].url: "
        "must be an http:// or https:// URL with a host"
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("interval: 30s", "interval: 30 seconds", "interval: '30 seconds' is not a duration"),
        ("interval: 30s", "intervall: 30s", "intervall: unknown field (did you mean 'interval'?)"),
        ("method: post", "method: FETCH", "endpoints[1].method: must be one of GET"),
        ("slaTarget: 99.0", "slaTarget: 120", "slaTarget: Input should be less than or equal"),
        ('[200, "3xx", "401-403"]', '["299-200"]', "endpoints[0].expectedStatus[0]"),
        ("id: face-compare", "id: Face_Compare", "id: must be a slug"),
        ("json: {a: 1}", "json: {a: 1}\n        body: x", "endpoints[1]: set either body or json"),
        ("- name: compare", "- name: health", "endpoints: endpoint name 'health' is used twice"),
    ],
    ids=["duration", "typo", "method", "sla", "status", "slug", "body-and-json", "dup-endpoint"],
)
def test_each_mistake_is_reported_where_it_is(old: str, new: str, expected: str) -> None:
    message = error_of(GOOD.replace(old, new))
    assert message.startswith("services.yaml: service '"), message
    assert expected in message


def test_duplicate_ids_and_missing_env_and_missing_field() -> None:
    text = (
        GOOD
        + """
  - id: defaults
    endpoints: [{name: x, url: "http://x/"}]
  - endpoints: [{name: x, url: "http://x/"}]
"""
    )
    message = error_of(text, env={"PASS": "p"})
    assert (
        "service 'face-compare' (services[0]): endpoints[0].url: environment variable "
        "'TOKEN' is not set" in message
    )
    assert "service 'defaults' (services[2]): id: duplicate of services[1]" in message
    assert "services.yaml: services[3]: id: required field is missing" in message


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"missing\.yaml: file not found"):
        load_catalog(tmp_path / "missing.yaml", settings=SETTINGS)
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  - id: [unclosed\n")
    with pytest.raises(CatalogError, match=r"bad\.yaml: line \d+ column \d+: invalid YAML"):
        load_catalog(bad, settings=SETTINGS)
    assert "unknown top-level key 'servics' (did you mean 'services'?)" in error_of("servics: []")
    assert "expected a mapping" in error_of("- just a list")


def test_durations_and_statuses() -> None:
    assert [parse_duration(v) for v in ("500ms", "30s", "5m", "1h", 12, 0.5, "2")] == [
        0.5,
        30.0,
        300.0,
        3600.0,
        12.0,
        0.5,
        2.0,
    ]
    with pytest.raises(ValueError):
        parse_duration(True)
    assert status_matches(204, ["200-299"]) and status_matches(404, ["200", "404"])
    assert not status_matches(404, ["200-299"])


def test_redact_url_keeps_what_identifies_the_endpoint() -> None:
    assert redact_url("http://127.0.0.1:3008/health") == "http://127.0.0.1:3008/health"
    assert redact_url("https://a:b@h:1/p?k=v&flag#frag") == "https://***@h:1/p?k=***&flag"


def test_the_example_catalog_in_the_repository_is_valid() -> None:
    catalog = load_catalog(REPO_CATALOG, settings=Settings())
    ids = [s.id for s in catalog.services]
    assert "demo-failing" in ids and len(ids) >= 2
    assert all(10 <= s.interval_seconds <= 30 for s in catalog.services)
