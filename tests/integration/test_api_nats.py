"""The api's NATS side: manual checks through a (fake) prober on `watch.probe.run`, and the
pipeline lag read from real JetStream consumers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import nats
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from services.api.main import ApiServer
from services.api.settings import ApiSettings
from shared.events import CHECKS_STREAM, PROBE_RUN_SUBJECT, ProbeRunReply, ProbeRunRequest
from shared.settings import Settings
from shared.streams import ensure_streams
from tests.factories import make_check_completed, make_endpoint_result
from tests.polling import eventually

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@asynccontextmanager
async def running_api(settings: Settings, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    server = ApiServer(
        settings=settings.model_copy(update={"api_host": "127.0.0.1", **kwargs}),
        api_settings=ApiSettings(health_check_ip_burst=100),  # many checks in a row here
    )
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            await eventually(
                lambda: client.get("/health"),
                until=lambda r: r.json()["nats"] == "up",
                what="the api connected to NATS",
            )
            yield client
    finally:
        await server.stop()


async def add_services(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        for sid in ("svc-a", "svc-b"):
            await conn.execute(
                "INSERT INTO services (id, name, interval_seconds, timeout_ms, sla_target, "
                "defined_at) VALUES ($1, $1, 30, 10000, 99.9, now())",
                sid,
            )
    finally:
        await conn.close()


async def test_manual_check_through_the_prober(settings: Settings) -> None:
    await add_services(settings.database_url)
    asked: list[ProbeRunRequest] = []
    check = make_check_completed(
        service_id="svc-a",
        trigger="manual",
        status="down",
        endpoints=[
            make_endpoint_result(
                ok=False, status_code=503, error_type="http_status", error_message="HTTP 503"
            )
        ],
    )

    async def fake_prober(msg: Msg) -> None:
        request = ProbeRunRequest.model_validate_json(msg.data)
        asked.append(request)
        if request.service_id in (None, "svc-a"):
            reply = ProbeRunReply(results=[check])
        else:
            reply = ProbeRunReply(error=f"unknown service '{request.service_id}'")
        await msg.respond(reply.to_wire())

    nc = await nats.connect(settings.nats_url)
    try:
        sub = await nc.subscribe(PROBE_RUN_SUBJECT, cb=fake_prober)
        await nc.flush()
        async with running_api(settings, api_token=TOKEN) as api:
            assert (await api.post("/api/health-check?serviceId=svc-a")).status_code == 401

            r = await api.post("/api/health-check?serviceId=svc-a", headers=AUTH)
            assert r.status_code == 200, r.text
            [result] = r.json()["results"]
            assert result["checkId"] == str(check.check_id)
            assert (result["serviceId"], result["trigger"], result["status"]) == (
                "svc-a",
                "manual",
                "down",
            )
            assert result["endpoints"][0]["errorType"] == "http_status"
            assert asked[-1] == ProbeRunRequest(service_id="svc-a")

            everything = await api.post("/api/health-check", headers=AUTH)
            assert everything.status_code == 200 and len(everything.json()["results"]) == 1
            assert asked[-1] == ProbeRunRequest(service_id=None)

            # known to the database but not to the prober: the prober's word, as a 404
            r = await api.post("/api/health-check?serviceId=svc-b", headers=AUTH)
            assert r.status_code == 404
            assert r.json() == {"error": "probe_rejected", "message": "unknown service 'svc-b'"}
            # unknown to the database: 404 without bothering the prober
            n = len(asked)
            assert (
                await api.post("/api/health-check?serviceId=x", headers=AUTH)
            ).status_code == 404
            assert len(asked) == n

            await sub.unsubscribe()
            await nc.flush()
            started = time.monotonic()
            r = await api.post("/api/health-check?serviceId=svc-a", headers=AUTH)
            assert r.status_code == 503
            assert r.json()["error"] == "prober_unavailable"
            assert "no prober is listening" in r.json()["message"]
            assert time.monotonic() - started < 5
    finally:
        await nc.close()


async def test_a_prober_that_never_answers_is_a_503_after_the_timeout(settings: Settings) -> None:
    await add_services(settings.database_url)
    nc = await nats.connect(settings.nats_url)
    try:

        async def silent(_: Msg) -> None:
            return None

        await nc.subscribe(PROBE_RUN_SUBJECT, cb=silent)
        await nc.flush()
        # REQUEST_TIMEOUT 100 ms + the api's 5 s margin
        async with running_api(settings, request_timeout=100) as api:
            started = time.monotonic()
            r = await api.post("/api/health-check?serviceId=svc-a")
            took = time.monotonic() - started
            assert r.status_code == 503
            assert r.json()["message"] == "no prober answered within 5.1 s"
            assert 5 <= took < 10
    finally:
        await nc.close()


async def test_pipeline_lag_comes_from_the_durable_consumers(settings: Settings) -> None:
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js, settings)
        for durable in ("recorder", "aggregator"):
            await js.add_consumer(
                CHECKS_STREAM, ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT)
            )
        for _ in range(3):
            check = make_check_completed()
            await js.publish(
                f"watch.check.{check.service_id}",
                check.to_wire(),
                headers={"Nats-Msg-Id": str(check.check_id)},
            )
        recorder = await js.pull_subscribe_bind("recorder", stream=CHECKS_STREAM)
        [_msg] = await recorder.fetch(1, timeout=5)  # delivered, not acked

        async with running_api(settings) as api:
            status = (await api.get("/api/status")).json()
            assert status["pipeline"] == {
                "recorder": {"pending": 2, "ackPending": 1},
                "aggregator": {"pending": 3, "ackPending": 0},
            }
            await js.delete_consumer(CHECKS_STREAM, "aggregator")
            status = (await api.get("/api/status")).json()
            assert status["pipeline"]["aggregator"] is None
            assert status["pipeline"]["recorder"] == {"pending": 2, "ackPending": 1}
    finally:
        await nc.close()
