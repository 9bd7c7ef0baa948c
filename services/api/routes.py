"""The HTTP API of DESIGN.md: metrics, SLA, trend, uptime, status and manual checks."""

from __future__ import annotations

import hmac
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.api import metrics
from services.api.bus import ProbeRejected
from services.api.context import ApiContext, context
from services.api.errors import MAX_DAYS, MAX_HOURS, ApiError, not_found
from services.api.schemas import (
    ErrorBody,
    Health,
    HealthCheckResults,
    MetricsList,
    Pipeline,
    ProberStatus,
    ServiceMetrics,
    ServiceStatus,
    SlaReport,
    StatusReport,
    Trend,
    UptimeReport,
    ValidationErrorBody,
)
from services.api.store import DatabaseUnavailable, ServiceInfo

PROBE_MARGIN_SECONDS = 5.0  # on top of REQUEST_TIMEOUT: scheduling and the reply's trip
PROBER_SEEN_WINDOW = timedelta(hours=24)

router = APIRouter()
Ctx = Annotated[ApiContext, Depends(context)]
ServiceId = Annotated[
    str, Path(alias="serviceId", description="The catalog id, e.g. face-compare.")
]
DAYS_DOC = f"Whole UTC days up to and including today, 1 to {MAX_DAYS}."
Days = Annotated[int, Query(ge=1, le=MAX_DAYS, description=DAYS_DOC)]
Hours = Annotated[
    int,
    Query(ge=1, le=MAX_HOURS, description=f"UTC hours incl. the current one, 1 to {MAX_HOURS}."),
]
_READ_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown service."},
    422: {"model": ValidationErrorBody, "description": "A parameter is out of range."},
    503: {"model": ErrorBody, "description": "PostgreSQL is down and no earlier answer exists."},
}
_bearer = HTTPBearer(auto_error=False, description="API_TOKEN, when the server has one.")


async def _known(ctx: ApiContext, service_id: str) -> ServiceInfo:
    service = await ctx.store.get_service(service_id)
    if service is None:
        raise not_found(service_id)
    return service


@router.get("/health", response_model=Health, tags=["ops"])
async def health(ctx: Ctx) -> Health:
    """Liveness plus the state of PostgreSQL and NATS; 200 even when degraded."""
    database = await ctx.store.ping()
    nats_up = ctx.bus.connected
    return Health(
        status="ok" if database and nats_up else "degraded",
        database="up" if database else "down",
        nats="up" if nats_up else "down",
        version=ctx.version,
    )


@router.get("/api/metrics", response_model=MetricsList, responses=_READ_ERRORS, tags=["metrics"])
async def all_metrics(ctx: Ctx, days: Days = 7) -> MetricsList:
    """The same figures as /api/metrics/{serviceId} for every active service."""

    async def compute() -> MetricsList:
        now = ctx.clock()
        period = metrics.day_window(now.date(), days)
        services = await ctx.store.list_services(active_only=True)
        rows = await ctx.store.daily_rollups([s.id for s in services], period.start, period.end)
        return MetricsList(
            period=period,
            services=[
                metrics.service_metrics(s.id, period, rows.get(s.id, []), now) for s in services
            ],
            computed_at=now,
        )

    return await ctx.answer(("metrics", days), "/api/metrics", compute)


@router.get(
    "/api/metrics/{serviceId}",
    response_model=ServiceMetrics,
    responses=_READ_ERRORS,
    tags=["metrics"],
)
async def service_metrics(ctx: Ctx, service_id: ServiceId, days: Days = 30) -> ServiceMetrics:
    """Uptime, response times, percentiles and errors over the last `days` UTC days."""

    async def compute() -> ServiceMetrics:
        service = await _known(ctx, service_id)
        now = ctx.clock()
        period = metrics.day_window(now.date(), days)
        rows = await ctx.store.daily_rollups([service.id], period.start, period.end)
        return metrics.service_metrics(service.id, period, rows.get(service.id, []), now)

    return await ctx.answer(("metrics", service_id, days), "/api/metrics/{serviceId}", compute)


@router.get(
    "/api/metrics/{serviceId}/trend",
    response_model=Trend,
    responses=_READ_ERRORS,
    tags=["metrics"],
)
async def trend(
    ctx: Ctx,
    service_id: ServiceId,
    hours: Hours = 24,
) -> Trend:
    """One point per UTC hour: requests, uptime, average and p95 response time."""

    async def compute() -> Trend:
        service = await _known(ctx, service_id)
        now = ctx.clock()
        starts = metrics.hour_window(now, hours)
        rows = await ctx.store.hourly_rollups(
            service.id, starts[0], starts[-1] + timedelta(hours=1)
        )
        return Trend(
            service_id=service.id,
            hours=hours,
            points=metrics.trend_points(starts, rows),
            computed_at=now,
        )

    return await ctx.answer(("trend", service_id, hours), "/api/metrics/{serviceId}/trend", compute)


@router.get("/api/sla/{serviceId}", response_model=SlaReport, responses=_READ_ERRORS, tags=["sla"])
async def sla(ctx: Ctx, service_id: ServiceId, days: Days = 30) -> SlaReport:
    """Uptime against the service's SLA target, days below it, latency SLA and error budget."""

    async def compute() -> SlaReport:
        service = await _known(ctx, service_id)
        now = ctx.clock()
        period = metrics.day_window(now.date(), days)
        rows = await ctx.store.daily_rollups([service.id], period.start, period.end)
        records = await ctx.store.day_records(service.id, period.start, period.end)
        return metrics.sla_report(
            service.id, service.sla_target, period, rows.get(service.id, []), records.values(), now
        )

    return await ctx.answer(("sla", service_id, days), "/api/sla/{serviceId}", compute)


@router.get(
    "/api/uptime/{serviceId}", response_model=UptimeReport, responses=_READ_ERRORS, tags=["sla"]
)
async def uptime(ctx: Ctx, service_id: ServiceId, days: Days = 90) -> UptimeReport:
    """Every UTC day of the window, oldest first: o, po, mo or nd (no data)."""

    async def compute() -> UptimeReport:
        service = await _known(ctx, service_id)
        now = ctx.clock()
        period = metrics.day_window(now.date(), days)
        records = await ctx.store.day_records(service.id, period.start, period.end)
        return UptimeReport(
            service_id=service.id,
            period=period,
            days=metrics.uptime_days(period, records),
            computed_at=now,
        )

    return await ctx.answer(("uptime", service_id, days), "/api/uptime/{serviceId}", compute)


@router.get(
    "/api/status", response_model=StatusReport, responses={503: _READ_ERRORS[503]}, tags=["ops"]
)
async def status(ctx: Ctx) -> StatusReport:
    """Each service's last check, the probers heard from in 24 h, and the consumers' backlog."""
    # Asked of NATS each time, so the backlog stays live while PostgreSQL is down.
    pipeline = Pipeline(
        recorder=await ctx.bus.consumer_lag("recorder"),
        aggregator=await ctx.bus.consumer_lag("aggregator"),
    )

    async def compute() -> StatusReport:
        now = ctx.clock()
        states = await ctx.store.service_states()
        probers = await ctx.store.probers_seen(now - PROBER_SEEN_WINDOW)
        return StatusReport(
            services=[
                ServiceStatus(
                    service_id=s.service_id,
                    name=s.name,
                    active=s.active,
                    last_check_at=s.last_check_at,
                    last_status=s.last_status,  # type: ignore[arg-type]
                )
                for s in states
            ],
            probers=[
                ProberStatus(prober_id=p.prober_id, region=p.region, last_check_at=p.last_check_at)
                for p in probers
            ],
            pipeline=Pipeline(recorder=None, aggregator=None),
            computed_at=now,
        )

    report = await ctx.answer(("status",), "/api/status", compute)
    return report.model_copy(update={"pipeline": pipeline})


def _authorize(
    ctx: Ctx, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    token = ctx.settings.api_token
    if token is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise ApiError(
            401,
            "unauthorized",
            "this endpoint needs the header 'Authorization: Bearer <API_TOKEN>'",
            {"WWW-Authenticate": "Bearer"},
        )


@router.post(
    "/api/health-check",
    response_model=HealthCheckResults,
    dependencies=[Depends(_authorize)],
    responses={
        401: {"model": ErrorBody, "description": "API_TOKEN is set and the bearer token is wrong."},
        404: {"model": ErrorBody, "description": "Unknown or inactive service."},
        503: {"model": ErrorBody, "description": "No prober answered."},
    },
    tags=["checks"],
)
async def health_check(
    ctx: Ctx,
    service_id: Annotated[
        str | None, Query(alias="serviceId", description="One service; every service when absent.")
    ] = None,
) -> HealthCheckResults:
    """Run checks now through a prober and return their results (also recorded as usual)."""
    if service_id is not None:
        try:
            service = await ctx.store.get_service(service_id)
        except DatabaseUnavailable:
            service = None  # the prober knows its catalog; let it decide
        else:
            if service is None:
                raise not_found(service_id)
            if not service.active:
                raise ApiError(
                    404, "not_found", f"service '{service_id}' is no longer in the catalog"
                )
    timeout = ctx.settings.request_timeout / 1000 + PROBE_MARGIN_SECONDS
    try:
        reply = await ctx.bus.run_probe(service_id, wait_seconds=timeout)
    except ProbeRejected as exc:
        raise ApiError(404 if service_id else 502, "probe_rejected", str(exc)) from exc
    return HealthCheckResults(results=reply.results)
