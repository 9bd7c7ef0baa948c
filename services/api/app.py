"""Assembles the api: the FastAPI app, its lifespan (pool + NATS) and the ops endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from nats.aio.client import Client as NatsClient
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from services.api.badge_routes import router as badge_router
from services.api.bus import Bus
from services.api.cache import StaleCache
from services.api.context import ApiContext, Clock, context, utc_now
from services.api.errors import install_error_handlers
from services.api.fast_routes import install_fast_reads
from services.api.gauges import ServiceGauges
from services.api.http_metrics import HttpMetrics, MetricsMiddleware
from services.api.ratelimit import RateLimiter
from services.api.routes import router
from services.api.settings import ApiSettings
from services.api.store import MetricsStore, PostgresStore
from shared.logs import get_log
from shared.settings import Settings

log = get_log(__name__)

DESCRIPTION = """SLA figures for the HTTP APIs Watch Server monitors, read from the rollups.

Percentages are 0–100 rounded to 3 decimals (uptime 99.2 means 99.2 %); times are ms rounded
to 1 decimal; days and hours are UTC. While PostgreSQL is down, read endpoints replay the last
good answer to the same request with `stale: true` and its `computedAt`, or answer 503.
"""


def package_version() -> str:
    """The installed watch-server version."""
    try:
        return metadata.version("watch-server")
    except metadata.PackageNotFoundError:
        return "0+unknown"


ops_router = APIRouter(include_in_schema=False)


@ops_router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process serves requests."""
    return {"status": "ok", "service": "api"}


@ops_router.get("/readyz")
async def readyz(ctx: ApiContext = Depends(context)) -> JSONResponse:  # noqa: B008
    """Ready when it can answer: the database is up, or there are answers to replay."""
    database = await ctx.store.ping()
    replayable = ctx.cache.usable(ctx.clock())
    ready = database or replayable
    body = {"ready": ready, "database": database, "staleAnswers": len(ctx.cache)}
    return JSONResponse(body, 200 if ready else 503)


@ops_router.get("/metrics")
async def prometheus(ctx: ApiContext = Depends(context)) -> Response:  # noqa: B008
    """Prometheus text format: the api's own counters and the per-service gauges."""
    await ctx.gauges.refresh(store=ctx.store, now=ctx.clock())
    return Response(generate_latest(ctx.http_metrics.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(
    *,
    settings: Settings,
    api_settings: ApiSettings | None = None,
    store: MetricsStore | None = None,
    nats: NatsClient | None = None,
    clock: Clock = utc_now,
) -> FastAPI:
    """The api as an ASGI app; connects (pool, NATS) in its lifespan unless they are injected.

    Without `api_settings` the api's defaults apply (no CORS, read-only role, default limits).
    """
    api = api_settings if api_settings is not None else ApiSettings.model_construct()
    owned_store = (
        PostgresStore(
            dsn=settings.database_url,
            role=api.api_db_role if api.api_db_readonly else None,
            max_size=api.api_db_pool_size,
        )
        if store is None
        else None
    )
    http_metrics = HttpMetrics(CollectorRegistry())
    gauges = ServiceGauges(ttl_seconds=api.metrics_cache_seconds)
    http_metrics.registry.register(gauges)
    ctx = ApiContext(
        settings=settings,
        api_settings=api,
        store=store if store is not None else owned_store,  # type: ignore[arg-type]
        bus=Bus(url=settings.nats_url if nats is None else None, client=nats),
        cache=StaleCache(max_age_seconds=settings.stale_cache_seconds),
        http_metrics=http_metrics,
        gauges=gauges,
        limiter=RateLimiter(
            client_per_minute=api.health_check_ip_per_minute,
            client_burst=api.health_check_ip_burst,
            global_per_minute=api.health_check_global_per_minute,
            global_burst=api.health_check_global_burst,
        ),
        version=package_version(),
        clock=clock,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if owned_store is not None:
            await owned_store.start()
        await ctx.bus.start()
        log.info("api_started", version=ctx.version)
        try:
            yield
        finally:
            await ctx.bus.close()
            if owned_store is not None:
                await owned_store.close()
            log.info("api_stopped")

    app = FastAPI(
        title="Watch Server API",
        version=ctx.version,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.add_middleware(MetricsMiddleware, metrics=ctx.http_metrics)
    origins = api.cors_origin_list
    if origins:
        # Outermost, so preflights and error answers carry the CORS headers too.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Retry-After"],
            max_age=600,
        )
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(badge_router)
    app.include_router(ops_router)
    install_fast_reads(app.router.routes)
    return app
