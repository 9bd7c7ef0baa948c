"""Schemathesis against the served OpenAPI document: every operation, generated inputs, a real
migrated PostgreSQL with rollup rows; no 5xx other than the documented 503s, no response
that breaks its schema, status code, content type or headers."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import hypothesis
import nats
import pytest
import schemathesis
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.api.app import create_app
from services.api.main import ApiServer
from services.api.settings import ApiSettings
from shared import histogram
from shared.db import ensure_partitions
from shared.events import PROBE_RUN_SUBJECT, ProbeRunReply, ProbeRunRequest
from shared.settings import Settings
from tests.factories import make_check_completed

MAX_EXAMPLES = 25  # per operation and mode: the whole run takes seconds
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    negative_data_rejection,  # generated bad input (both modes run) must be a 4xx
    response_headers_conformance,
    response_schema_conformance,
]


async def seed(url: str) -> None:
    """Two services with a month of daily rollups, a day of hourly ones, state and raw rows."""
    now = datetime.now(UTC)
    today = now.date()
    hist: dict[str, int] = {}
    histogram.add(hist, 120.0, 95)
    histogram.add(hist, 900.0, 5)
    cols = {
        "total_checks": 100,
        "up_checks": 97,
        "degraded_checks": 1,
        "down_checks": 2,
        "total_requests": 100,
        "successful_requests": 98,
        "failed_requests": 2,
        "within_threshold": 96,
        "timed_requests": 100,
        "sum_response_time_ms": 95 * 120.0 + 5 * 900.0,
        "min_response_time_ms": 120.0,
        "max_response_time_ms": 900.0,
        "errors": json.dumps({"timeout": 1, "http_status": 1}),
        "latency_hist": json.dumps(hist),
    }
    names = ", ".join(cols)
    marks = ", ".join(f"${i + 3}" for i in range(len(cols)))
    conn = await asyncpg.connect(url)
    try:
        for sid in ("face-compare", "ocr"):
            await conn.execute(
                "INSERT INTO services (id, name, interval_seconds, timeout_ms, sla_target, "
                "defined_at) VALUES ($1, $1, 30, 10000, 99.5, now())",
                sid,
            )
            for offset in range(40):
                day = today - timedelta(days=offset)
                await conn.execute(
                    f"INSERT INTO api_call_logs (service_id, day, {names}) "
                    f"VALUES ($1, $2, {marks})",
                    sid,
                    day,
                    *cols.values(),
                )
                await conn.execute(
                    "INSERT INTO uptime_records (service_id, day, status, uptime, "
                    "total_requests, successful_requests, sla_target) "
                    "VALUES ($1, $2, 'po', 98.0, 100, 98, 99.5)",
                    sid,
                    day,
                )
            hour = now.replace(minute=0, second=0, microsecond=0)
            for offset in range(30):
                await conn.execute(
                    f"INSERT INTO api_call_logs_hourly (service_id, hour, {names}) "
                    f"VALUES ($1, $2, {marks})",
                    sid,
                    hour - timedelta(hours=offset),
                    *cols.values(),
                )
            await conn.execute(
                "INSERT INTO service_state (service_id, last_status, last_started_at) "
                "VALUES ($1, 'up', $2)",
                sid,
                now,
            )
        await ensure_partitions(conn, "watch_server_logs", today - timedelta(days=1), today)
        await conn.execute(
            "INSERT INTO watch_server_logs (check_id, started_at, service_id, status, "
            "response_time_ms, endpoint_count, failed_count, region, prober_id, trigger) "
            "VALUES (gen_random_uuid(), $1, 'ocr', 'up', 10, 1, 0, 'eu', 'p-1', 'scheduled')",
            now - timedelta(seconds=5),
        )
    finally:
        await conn.close()


async def fake_prober(msg: Msg) -> None:
    """Answer manual checks like the prober: one manual result per service asked for."""
    request = ProbeRunRequest.model_validate_json(msg.data)
    sid = request.service_id or "face-compare"
    reply = ProbeRunReply(results=[make_check_completed(service_id=sid, trigger="manual")])
    await msg.respond(reply.to_wire())


class ServerThread:
    """The api and a fake prober in their own thread and event loop (schemathesis is sync)."""

    def __init__(self, settings: Settings, api_settings: ApiSettings) -> None:
        self.settings = settings
        self.server = ApiServer(settings=settings, api_settings=api_settings)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.nc: NatsClient | None = None

    async def _start(self) -> None:
        self.nc = await nats.connect(self.settings.nats_url)
        await self.nc.subscribe(PROBE_RUN_SUBJECT, cb=fake_prober)
        await self.nc.flush()
        await self.server.start()

    async def _stop(self) -> None:
        await self.server.stop()
        if self.nc is not None:
            await self.nc.close()

    def __enter__(self) -> str:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self.server.url

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
async def seeded_db(infra: Any, template_db: str) -> str:
    name = f"st_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(infra.pg.url("postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    finally:
        await conn.close()
    url = str(infra.pg.url(name))
    await seed(url)
    return url


@pytest.fixture(scope="module")
def api_url(infra: Any, seeded_db: str) -> Iterator[str]:
    settings = Settings(
        database_url=seeded_db,
        nats_url=infra.nats.url,
        api_host="127.0.0.1",
        api_port=0,
        request_timeout=100,
    )
    api = ApiSettings(health_check_ip_burst=10_000, health_check_global_burst=10_000)
    with ServerThread(settings, api) as url:
        yield url


# The document the api serves, built without I/O (schemathesis 4.32's lazy fixture loader
# does not work with pytest 9); test_served_document_is_the_one_tested guards the equality.
DOCUMENT = create_app(settings=Settings()).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_served_document_is_the_one_tested(api_url: str) -> None:
    assert httpx.get(f"{api_url}/openapi.json").json() == json.loads(json.dumps(DOCUMENT))


@pytest.mark.timeout(300)
@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_every_operation_keeps_its_contract(case: Any, api_url: str) -> None:
    case.call_and_validate(base_url=api_url, checks=CHECKS)
