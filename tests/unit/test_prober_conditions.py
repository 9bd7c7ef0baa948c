"""Gatus-style conditions: parsing, evaluation, and what a failure says (no network)."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from services.prober.catalog import CatalogError, Service, parse_catalog
from services.prober.conditions import (
    MISSING,
    ConditionError,
    Context,
    decode_json,
    parse_condition,
)
from shared.settings import Settings
from tests.factories import run_check

SETTINGS = Settings(region="test", prober_id="p-1")
BODY = {
    "status": "UP",
    "ok": True,
    "data": {"count": 3, "ratio": 0.5, "name": "db-primary", "empty": None},
    "items": [{"id": 7}, {"id": 8}],
}


def evaluate(condition: str, body: Any = BODY, *, status: int = 200, ms: float = 12.0) -> Any:
    text = body if isinstance(body, str) else json.dumps(body)
    ctx = Context(
        status=status,
        response_time_ms=ms,
        text=text,
        headers=httpx.Headers({"Content-Type": "application/json; charset=utf-8"}),
    )
    return parse_condition(condition).check(ctx, decode_json(text))


@pytest.mark.parametrize(
    "condition",
    [
        "[STATUS] == 200",
        "[STATUS] == any(200, 201)",
        "[STATUS] < 300",
        "[RESPONSE_TIME] < 500",
        "[BODY].status == UP",
        '[BODY].status == "UP"',
        "[BODY].status != DOWN",
        "[BODY].ok == true",
        "[BODY].data.count > 0",
        "[BODY].data.count == 3",
        "[BODY].data.count == 3.0",
        "[BODY].data.ratio <= 0.5",
        "[BODY].data.name == pat(db-*)",
        "[BODY].data.empty == null",
        "[BODY].items[1].id == 8",
        "len([BODY].items) >= 1",
        "len([BODY].data.name) == 10",
        "has([BODY].data.count) == true",
        "has([BODY].errors) == false",
        "[BODY] == pat(*UP*)",
        "[HEADER].content-type == pat(application/json*)",
        "[HEADER].Content-Type == pat(application/json*)",
    ],
)
def test_conditions_that_hold(condition: str) -> None:
    assert evaluate(condition) is None


@pytest.mark.parametrize(
    ("condition", "seen"),
    [
        ("[BODY].status == DOWN", '[BODY].status is "UP"'),
        ("[BODY].data.count > 5", "[BODY].data.count is 3"),
        ("[BODY].data.missing == 1", "[BODY].data.missing is missing"),
        ("[BODY].items[5].id == 1", "[BODY].items[5].id is missing"),
        ("len([BODY].items) >= 3", "len([BODY].items) is 2"),
        ("has([BODY].errors) == true", "has([BODY].errors) is false"),
        ("[BODY].status > 1", '[BODY].status is "UP"'),  # not a number: never holds
        ("[STATUS] == any(201, 204)", "[STATUS] is 200"),
        ("[HEADER].x-missing == a", "[HEADER].x-missing is missing"),
        ("[RESPONSE_TIME] < 10", "[RESPONSE_TIME] is 12"),
    ],
)
def test_failures_say_what_was_seen(condition: str, seen: str) -> None:
    assert evaluate(condition) == seen


def test_a_json_path_on_a_body_that_is_not_json() -> None:
    assert evaluate("[BODY].status == UP", "<html>oops</html>") == "body is not JSON"
    assert decode_json("<html>") is MISSING
    assert evaluate("[BODY] == pat(<html>*)", "<html>oops</html>") is None


def test_a_long_value_is_cut_in_the_message() -> None:
    seen = evaluate("[BODY].data.name == x", {"data": {"name": "y" * 500}})
    assert seen is not None and seen.startswith('[BODY].data.name is "yyy')
    assert seen.endswith("...") and len(seen) < 120


@pytest.mark.parametrize(
    ("condition", "problem"),
    [
        ("[BODY].status", "no comparison"),
        ("[BODY].status == ", "nothing right of =="),
        ("[BOD].status == UP", "left side must be"),
        ("[BODY]status == UP", "cannot read the path"),
        ("[BODY].count > many", "needs a number"),
        ("", "non-empty string"),
    ],
)
def test_bad_conditions_are_refused(condition: str, problem: str) -> None:
    with pytest.raises(ConditionError, match=problem):
        parse_condition(condition)


def catalog(endpoint: str) -> str:
    return f"services:\n  - id: svc\n    timeout: 1s\n    endpoints:\n      - {endpoint}\n"


def test_the_catalog_names_the_bad_condition() -> None:
    text = catalog("{name: a, url: 'http://t/a', conditions: ['[STATUS] == 200', '[BODY].x >']}")
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, label="s.yaml", settings=SETTINGS, env={})
    assert str(caught.value).startswith(
        "s.yaml: service 'svc' (services[0]): endpoints[0].conditions[1]: '[BODY].x >'"
    )


@pytest.mark.parametrize(
    ("endpoint", "problem"),
    [
        ("{name: a, url: 'http://t/a', bodyRegex: '(unclosed'}", "endpoints[0].bodyRegex:"),
        (
            "{name: a, url: 'http://t/a', certificateExpiresInDays: 14}",
            "certificateExpiresInDays needs an https:// url",
        ),
        ("{name: a, url: 'https://t/a', certificateExpiresInDays: 0}", "greater than 0"),
        ("{name: a, url: 'http://t/a', bodyContain: ok}", "did you mean 'bodyContains'"),
    ],
)
def test_bad_condition_fields_are_refused(endpoint: str, problem: str) -> None:
    with pytest.raises(CatalogError, match=re.escape(problem)):
        parse_catalog(catalog(endpoint), label="s.yaml", settings=SETTINGS, env={})


def service(endpoint: str, **env: str) -> Service:
    return parse_catalog(catalog(endpoint), label="t.yaml", settings=SETTINGS, env=env).services[0]


async def check(svc: Service, reply: httpx.Response) -> Any:
    async def handler(_: httpx.Request) -> httpx.Response:
        return reply

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        return await run_check(svc, client=client, settings=SETTINGS)


async def test_a_failed_condition_is_an_assertion_naming_it() -> None:
    svc = service(
        "{name: a, url: 'http://t/a', conditions: ['[BODY].status == UP', 'len([BODY].items) > 0']}"
    )
    result = await check(svc, httpx.Response(200, json={"status": "DOWN", "items": []}))
    endpoint = result.endpoints[0]
    assert (result.status, endpoint.ok, endpoint.error_type) == ("down", False, "assertion")
    assert endpoint.status_code == 200
    assert endpoint.failed_condition == "[BODY].status == UP"
    assert endpoint.error_message == (
        "condition '[BODY].status == UP' failed: [BODY].status is \"DOWN\" (and 1 more)"
    )


async def test_a_wrong_status_is_reported_before_conditions() -> None:
    svc = service("{name: a, url: 'http://t/a', conditions: ['[BODY].status == UP']}")
    result = await check(svc, httpx.Response(503, json={"status": "DOWN"}))
    assert result.endpoints[0].error_type == "http_status"
    assert result.endpoints[0].failed_condition is None


async def test_body_contains_and_regex() -> None:
    svc = service("{name: a, url: 'http://t/a', bodyContains: healthy, bodyRegex: 'v\\d+\\.\\d+'}")
    good = await check(svc, httpx.Response(200, text="all healthy, v1.42"))
    missing = await check(svc, httpx.Response(200, text="degraded, v1.42"))
    no_version = await check(svc, httpx.Response(200, text="healthy"))
    assert good.status == "up"
    assert missing.endpoints[0].failed_condition == "bodyContains: healthy"
    assert missing.endpoints[0].error_message == (
        "condition 'bodyContains: healthy' failed: body does not contain it "
        "(body: 'degraded, v1.42')"
    )
    assert no_version.endpoints[0].failed_condition == "bodyRegex: v\\d+\\.\\d+"


async def test_a_secret_in_a_condition_never_reaches_the_event() -> None:
    svc = service(
        "{name: a, url: 'http://t/a', conditions: ['[BODY].token == ${TOKEN}']}", TOKEN="s3cr3t-v"
    )
    result = await check(svc, httpx.Response(200, json={"token": "other"}))
    wire = result.to_wire().decode()
    assert result.endpoints[0].error_type == "assertion"
    assert "s3cr3t-v" not in wire and "***" in (result.endpoints[0].failed_condition or "")
