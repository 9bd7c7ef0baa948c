"""The HTTP API of DESIGN.md: metrics, SLA, trend, uptime, status and manual checks."""

from __future__ import annotations

import hmac
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.api import metrics
from services.api.bus import ProbeRejected
from services.api.context import ApiContext, context
from services.api.errors import (
    FIRST_MONTH,
    MAX_DAYS,
    MAX_HOURS,
    MONTH_PATTERN,
    PARAM_RULES,
    SERVICE_ID_PATTERN,
    ApiError,
    ParamInvalid,
    not_found,
)
from services.api.metrics import Rollup
from services.api.schemas import (
    ErrorBody,
    Health,
    HealthCheckResults,
    MetricsList,
    Period,
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
# Probers are found in the raw results, so the window is short to keep the scan small.
PROBER_SEEN_WINDOW = timedelta(hours=1)

router = APIRouter()
Ctx = Annotated[ApiContext, Depends(context)]
ServiceId = Annotated[
    str,
    Path(
        alias="serviceId",
        pattern=SERVICE_ID_PATTERN,
        description="The catalog id (a slug), e.g. face-compare.",
        examples=["face-compare"],
    ),
]
DAYS_DOC = f"Whole UTC days up to and including today, 1 to {MAX_DAYS}."
Days = Annotated[int, Query(ge=1, le=MAX_DAYS, description=DAYS_DOC)]
OptionalDays = Annotated[
    int | None,
    Query(ge=1, le=MAX_DAYS, description=DAYS_DOC + " Default 30; not together with month."),
]
Month = Annotated[
    str | None,
    Query(
        pattern=MONTH_PATTERN,
        description=f"A calendar month YYYY-MM (UTC), {FIRST_MONTH} to the current one; "
        "instead of days.",
        examples=["2026-11"],
    ),
]
HOURS_DOC = f"UTC hours incl. the current one, 1 to {MAX_HOURS}."
Hours = Annotated[int, Query(ge=1, le=MAX_HOURS, description=HOURS_DOC)]
_READ_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown service."},
    422: {"model": ValidationErrorBody, "description": "A parameter is out of range."},
    503: {"model": ErrorBody, "description": "PostgreSQL is down and no earlier answer exists."},
}
DEFAULT_DAYS = 30
_bearer = HTTPBearer(auto_error=False, description="API_TOKEN, when the server has one.")


def _window(now: datetime, days: int | None, month: str | None) -> Period:
    """The rolling window of `days` (default 30) or the calendar `month`; 422 when both."""
    if month is None:
        return metrics.day_window(now.date(), days if days is not None else DEFAULT_DAYS)
    if days is not None:
        raise ParamInvalid("month", "give either days or month, not both", month)
    # YYYY-MM strings order like the months they name (and 0000-01 is no date at all).
    if not FIRST_MONTH <= month <= now.strftime("%Y-%m"):
        raise ParamInvalid("month", PARAM_RULES["month"], month)
    return metrics.month_window(date(int(month[:4]), int(month[5:7]), 1))


def _listed(total: Rollup | None) -> list[Rollup]:
    return [] if total is None else [total]


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
        totals = await ctx.store.window_totals([s.id for s in services], period.start, period.end)
        return MetricsList(
            period=period,
            services=[
                metrics.service_metrics(s.id, period, _listed(totals.get(s.id)), now)
                for s in services
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
async def service_metrics(
    ctx: Ctx, service_id: ServiceId, days: OptionalDays = None, month: Month = None
) -> ServiceMetrics:
    """Uptime, response times, percentiles and errors over the last `days` UTC days (or a
    calendar `month`)."""
    return await metrics_answer(ctx, service_id, days, month)


async def metrics_answer(
    ctx: ApiContext, service_id: str, days: int | None, month: str | None
) -> ServiceMetrics:
    """The metrics answer (fresh or replayed stale), shared with the badges."""
    _window(ctx.clock(), days, month)  # a bad window is a 422 even while the database is down

    async def compute() -> ServiceMetrics:
        service = await _known(ctx, service_id)
        now = ctx.clock()
        period = _window(now, days, month)
        total = await ctx.store.service_window(
            service.id, period.start, period.end, open_from=now.date()
        )
        return metrics.service_metrics(service.id, period, _listed(total), now)

    key = ("metrics", service_id, days, month)
    return await ctx.answer(key, "/api/metrics/{serviceId}", compute)


@router.get(
    "/api/metrics/{serviceId}/trend",
    response_model=Trend,
    responses=_READ_ERRORS,
    tags=["metrics"],
)
async def trend(
    ctx: Ctx,
    service_id: ServiceId,
    resolution: Annotated[
        Literal["1h", "1d"],
        Query(description="1h: one point per UTC hour (window `hours`); 1d: per UTC day (`days`)."),
    ] = "1h",
    hours: Annotated[
        int | None,
        Query(ge=1, le=MAX_HOURS, description=HOURS_DOC + " Default 24; only with 1h."),
    ] = None,
    days: Annotated[
        int | None, Query(ge=1, le=MAX_DAYS, description=DAYS_DOC + " Default 30; only with 1d.")
    ] = None,
) -> Trend:
    """A series of points (requests, uptime, error rate, avg/p95/p99 response time) per UTC
    hour or day, oldest first; buckets without data have 0 requests and nulls."""
    if resolution == "1h" and days is not None:
        raise ParamInvalid(
            "days",
            f"days goes with resolution=1d; with resolution=1h use hours (1 to {MAX_HOURS})",
            str(days),
        )
    if resolution == "1d" and hours is not None:
        raise ParamInvalid(
            "hours",
            f"hours goes with resolution=1h; with resolution=1d use days (1 to {MAX_DAYS})",
            str(hours),
        )

    async def compute() -> Trend:
        service = await _known(ctx, service_id)
        now = ctx.clock()
        if resolution == "1d":
            period = metrics.day_window(now.date(), days or DEFAULT_DAYS)
            by_day = await ctx.store.daily_by_day([service.id], period.start, period.end)
            rows = {metrics.midnight(d): r for d, r in by_day.get(service.id, {}).items()}
            starts = [metrics.midnight(d) for d in metrics.days_of(period)]
            return Trend(
                service_id=service.id,
                resolution="1d",
                hours=None,
                days=period.days,
                points=metrics.trend_points(starts, rows),
                computed_at=now,
            )
        starts = metrics.hour_window(now, hours or 24)
        hourly = await ctx.store.hourly_rollups(
            service.id, starts[0], starts[-1] + timedelta(hours=1)
        )
        return Trend(
            service_id=service.id,
            resolution="1h",
            hours=len(starts),
            days=None,
            points=metrics.trend_points(starts, hourly),
            computed_at=now,
        )

    key = ("trend", service_id, resolution, hours, days)
    return await ctx.answer(key, "/api/metrics/{serviceId}/trend", compute)


@router.get("/api/sla/{serviceId}", response_model=SlaReport, responses=_READ_ERRORS, tags=["sla"])
async def sla(
    ctx: Ctx, service_id: ServiceId, days: OptionalDays = None, month: Month = None
) -> SlaReport:
    """Uptime against the service's SLA target, days below it, latency SLA, the error budget
    (requests, checks, minutes) and the accounting policy, over `days` or a calendar `month`."""
    return await sla_answer(ctx, service_id, days, month)


async def sla_answer(
    ctx: ApiContext, service_id: str, days: int | None, month: str | None
) -> SlaReport:
    """The SLA answer (fresh or replayed stale), shared with the badges."""
    _window(ctx.clock(), days, month)

    async def compute() -> SlaReport:
        service = await _known(ctx, service_id)
        now = ctx.clock()
        period = _window(now, days, month)
        total, records = await ctx.store.sla_inputs(service.id, period.start, period.end)
        return metrics.sla_report(
            service.id,
            service.sla_target,
            period,
            _listed(total),
            records.values(),
            now,
            interval_seconds=service.interval_seconds,
            major_outage_below=ctx.settings.major_outage_below,
        )

    return await ctx.answer(("sla", service_id, days, month), "/api/sla/{serviceId}", compute)


@router.get(
    "/api/uptime/{serviceId}", response_model=UptimeReport, responses=_READ_ERRORS, tags=["sla"]
)
async def uptime(
    ctx: Ctx,
    service_id: ServiceId,
    days: Annotated[
        int | None,
        Query(ge=1, le=MAX_DAYS, description=DAYS_DOC + " Default 90; not together with month."),
    ] = None,
    month: Month = None,
) -> UptimeReport:
    """Every UTC day of the window (or calendar month), oldest first: o, po, mo or nd."""
    _window(ctx.clock(), days, month)
    days_or_default = days if days is not None or month is not None else 90

    async def compute() -> UptimeReport:
        service = await _known(ctx, service_id)
        now = ctx.clock()
        period = _window(now, days_or_default if month is None else None, month)
        records = await ctx.store.day_records(service.id, period.start, period.end)
        return UptimeReport(
            service_id=service.id,
            period=period,
            days=metrics.uptime_days(period, records),
            computed_at=now,
        )

    key = ("uptime", service_id, days_or_default, month)
    return await ctx.answer(key, "/api/uptime/{serviceId}", compute)


@router.get(
    "/api/status", response_model=StatusReport, responses={503: _READ_ERRORS[503]}, tags=["ops"]
)
async def status(ctx: Ctx) -> StatusReport:
    """Each service's last check, the probers heard from in the last hour, and the backlog
    of the recorder and aggregator consumers."""
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
                    sla_breached=s.sla_breached,
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


def _rate_limit(ctx: Ctx, request: Request) -> None:
    # After _authorize: callers without the token cannot drain the shared budget.
    client = request.client.host if request.client is not None else "unknown"
    wait = ctx.limiter.acquire(client)
    if wait:
        raise ApiError(
            429,
            "rate_limited",
            f"too many manual checks; retry in {wait} s",
            {"Retry-After": str(wait)},
        )


@router.post(
    "/api/health-check",
    response_model=HealthCheckResults,
    dependencies=[Depends(_authorize), Depends(_rate_limit)],
    # The bearer is required only when the server has an API_TOKEN: `{}` says "or none".
    openapi_extra={"security": [{}]},  # merged with FastAPI's [{"HTTPBearer": []}]
    responses={
        401: {"model": ErrorBody, "description": "API_TOKEN is set and the bearer token is wrong."},
        404: {"model": ErrorBody, "description": "Unknown or inactive service."},
        422: {"model": ValidationErrorBody, "description": "serviceId is not a slug."},
        429: {
            "model": ErrorBody,
            "description": "Too many manual checks from this client or overall; see Retry-After.",
            "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}},
        },
        502: {"model": ErrorBody, "description": "The prober refused the request."},
        503: {"model": ErrorBody, "description": "No prober answered."},
    },
    tags=["checks"],
)
async def health_check(
    ctx: Ctx,
    service_id: Annotated[
        str | None,
        Query(
            alias="serviceId",
            pattern=SERVICE_ID_PATTERN,
            description="One service; every service when absent.",
        ),
    ] = None,
) -> HealthCheckResults:
    """Run checks now through a prober and return their results (also recorded as usual).

    Rate-limited per client IP and overall (token buckets, 429 with Retry-After)."""
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
