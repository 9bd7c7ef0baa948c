"""The two hottest reads, /api/metrics/{serviceId} and /api/sla/{serviceId}, served without
FastAPI's per-request work when the request is plain.

A profile at a few hundred requests/s showed FastAPI spending more CPU than the handler:
matching the path against every route, solving the dependencies and inspecting each
parameter's annotation on every request, then re-validating the returned model. For a
request whose only parameter is an in-range `days` (or none), this ASGI route does the same
thing directly: the same handler function (`metrics_answer` / `sla_answer`, so the same
stale replay and errors), the same JSON (the model serialised by alias, as FastAPI does).
Anything else (month, other or repeated parameters, a malformed id or number) goes to the
documented FastAPI route, which stays the one source of the OpenAPI document and of every
validation message.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import cast
from urllib.parse import parse_qsl

from starlette.routing import BaseRoute, Match, Route
from starlette.types import Receive, Scope, Send

from services.api.context import ApiContext
from services.api.errors import MAX_DAYS, SERVICE_ID_PATTERN
from services.api.routes import metrics_answer, sla_answer
from services.api.schemas import StaleModel

Answer = Callable[[ApiContext, str, int | None, str | None], Awaitable[StaleModel]]

_SERVICE_ID = re.compile(SERVICE_ID_PATTERN)
_DAYS = re.compile(r"^[1-9][0-9]{0,4}$")  # canonical digits only; the rest is FastAPI's
_JSON_HEADERS = [(b"content-type", b"application/json")]


def _plain_days(scope: Scope) -> tuple[bool, int | None]:
    """(True, days) when the query is empty or one canonical in-range `days`."""
    query = scope.get("query_string", b"")
    if not query:
        return True, None
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    if len(pairs) != 1 or pairs[0][0] != "days" or not _DAYS.match(pairs[0][1]):
        return False, None
    days = int(pairs[0][1])
    return days <= MAX_DAYS, days


class FastRead:
    """The ASGI endpoint of a plain request: the handler's answer serialised by alias."""

    def __init__(self, answer: Answer) -> None:
        self._answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = cast(ApiContext, scope["app"].state.ctx)
        service_id = scope["path_params"]["serviceId"]
        model = await self._answer(ctx, service_id, scope["fast_read_days"], None)
        body = model.__pydantic_serializer__.to_json(model, by_alias=True)
        headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class FastRoute(Route):
    """Matches only plain GET requests; every other request finds the documented route."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.FULL or scope["method"] != "GET":
            return Match.NONE, {}
        plain, days = _plain_days(scope)
        if not plain or not _SERVICE_ID.match(child["path_params"]["serviceId"]):
            return Match.NONE, {}
        child["fast_read_days"] = days
        child["route"] = self  # the route template labels the request metrics
        return match, child


def install_fast_reads(routes: list[BaseRoute]) -> None:
    """Put the fast routes in front of the documented ones they stand in for."""
    fast: list[BaseRoute] = [
        FastRoute(path, FastRead(answer), methods=["GET"], include_in_schema=False)
        for path, answer in (
            ("/api/metrics/{serviceId}", metrics_answer),
            ("/api/sla/{serviceId}", sla_answer),
        )
    ]
    routes[:0] = fast
