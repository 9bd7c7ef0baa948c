"""SVG badges for READMEs and dashboards: uptime and response time over the last N days."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel

from services.api import badges
from services.api.routes import Ctx, Days, ServiceId, metrics_answer, sla_answer
from services.api.schemas import ErrorBody, ValidationErrorBody

router = APIRouter(tags=["badges"])


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}


_EXAMPLE = badges.render("uptime 30d", "99.95%", badges.GREEN)
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"image/svg+xml": {"schema": {"type": "string"}, "example": _EXAMPLE}},
        "description": "A shields-style SVG badge.",
    },
    # Errors are JSON, unlike the route's SVG: declared by content, not by model.
    404: {"content": _json(ErrorBody), "description": "Unknown service."},
    422: {"content": _json(ValidationErrorBody), "description": "A parameter is out of range."},
    503: {
        "content": _json(ErrorBody),
        "description": "PostgreSQL is down and no earlier answer exists.",
    },
}


class SvgResponse(Response):
    """image/svg+xml."""

    media_type = "image/svg+xml"


def _svg(ctx: Ctx, body: str, stale: bool) -> SvgResponse:
    max_age = ctx.api_settings.badge_max_age_seconds
    headers = {"Cache-Control": f"public, max-age={max_age}"}
    if stale:
        headers["X-Watch-Stale"] = "true"
    return SvgResponse(body, headers=headers)


@router.get("/api/badges/{serviceId}/uptime.svg", response_class=SvgResponse, responses=_RESPONSES)
async def uptime_badge(ctx: Ctx, service_id: ServiceId, days: Days = 30) -> SvgResponse:
    """Uptime over the last `days` UTC days: green at or above the SLA target, yellow down to
    MAJOR_OUTAGE_BELOW, red below, grey without data."""
    report = await sla_answer(ctx, service_id, days, None)
    color = badges.uptime_color(
        report.current_sla, report.sla_target, ctx.settings.major_outage_below
    )
    body = badges.render(f"uptime {days}d", badges.format_uptime(report.current_sla), color)
    return _svg(ctx, body, report.stale)


@router.get(
    "/api/badges/{serviceId}/response-time.svg", response_class=SvgResponse, responses=_RESPONSES
)
async def response_time_badge(ctx: Ctx, service_id: ServiceId, days: Days = 30) -> SvgResponse:
    """Average response time over the last `days` UTC days: green up to 300 ms, yellow up to
    800, orange up to 2000, red beyond, grey without data."""
    answer = await metrics_answer(ctx, service_id, days, None)
    avg = answer.avg_response_time
    body = badges.render(
        f"response time {days}d", badges.format_ms(avg), badges.response_time_color(avg)
    )
    return _svg(ctx, body, answer.stale)
