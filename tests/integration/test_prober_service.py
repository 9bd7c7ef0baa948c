"""The prober against real NATS (JetStream) and real loopback targets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client

from services.prober.service import Prober
from shared.events import (
    CHECKS_STREAM,
    PROBE_RUN_SUBJECT,
    SERVICES_STREAM,
    CheckCompleted,
    ProbeRunReply,
    ServiceDefined,
)
from shared.settings import Settings
from tests.conftest import Infra
from tests.polling import eventually
from tests.targets import FlakyTarget, Target

REPO = Path(__file__).resolve().parents[2]


def prober_settings(nats_url: str, catalog: Path, **overrides: Any) -> Settings:
    return Settings(
        nats_url=nats_url,
        services_file=str(catalog),
        region="test",
        prober_id="prober-test",
        ops_port=0,
        **overrides,
    )


def write_catalog(path: Path, services: dict[str, str], interval: str = "200ms") -> Path:
    lines = ["services:"]
    for service_id, url in services.items():
        lines += [
            f"  - id: {service_id}",
            f"    interval: {interval}",
            "    timeout: 1s",
            f"    endpoints: [{{name: health, url: '{url}', expectedStatus: [200]}}]",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def stream_messages(nc: Client, stream: str) -> list[Any]:
    """Every message stored in a stream, in order."""
    js = nc.jetstream()
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        return []
    messages: list[Any] = []
    if not info.state.messages:
        return messages
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            messages.append(await js.get_msg(stream, seq))
        except nats.js.errors.NotFoundError:
            continue
    return messages


async def stored_checks(nc: Client) -> list[tuple[str, CheckCompleted]]:
    """(Nats-Msg-Id, event) of every check in WATCH_CHECKS."""
    return [
        ((m.headers or {}).get("Nats-Msg-Id", ""), CheckCompleted.model_validate_json(m.data))
        for m in await stream_messages(nc, CHECKS_STREAM)
    ]


@pytest.fixture
async def nc(nats_url: str) -> Any:
    conn = await nats.connect(nats_url)
    yield conn
    await conn.close()


async def test_results_and_catalog_land_in_jetstream(
    nats_url: str, nc: Client, tmp_path: Path
) -> None:
    async with FlakyTarget(fail_every=3) as target:
        catalog = write_catalog(tmp_path / "services.yaml", {"flaky": target.url})
        async with Prober(settings=prober_settings(nats_url, catalog)) as prober:
            checks = await eventually(
                lambda: stored_checks(nc), until=lambda c: len(c) >= 6, what="6 checks stored"
            )
            async with httpx.AsyncClient() as http:
                base = f"http://127.0.0.1:{prober.ops.port}"
                ready = (await http.get(f"{base}/readyz")).json()
                metrics = (await http.get(f"{base}/metrics")).text
    for msg_id, event in checks:
        assert msg_id == str(event.check_id)
        assert (event.service_id, event.region, event.trigger) == ("flaky", "test", "scheduled")
    # Requests 3, 6, ... fail: the stored statuses follow the target's schedule.
    statuses = [e.status for _, e in checks[:6]]
    assert statuses == ["up", "up", "down", "up", "up", "down"]
    assert checks[2][1].endpoints[0].error_type == "http_status"
    assert ready["ready"] is True and ready["nats"] is True and "bufferDepth" in ready
    assert 'prober_checks_total{status="down"} 2.0' in metrics
    assert "prober_check_lateness_seconds_bucket" in metrics
    definitions = await stream_messages(nc, SERVICES_STREAM)
    assert [ServiceDefined.model_validate_json(m.data).service_id for m in definitions] == ["flaky"]


async def test_catalog_changes_are_published_once_and_removals_deactivate(
    nats_url: str, nc: Client, tmp_path: Path
) -> None:
    path = tmp_path / "services.yaml"
    far = {"interval": "1h"}  # no checks needed here, only the catalog

    async def run_once(services: dict[str, str]) -> None:
        write_catalog(path, services, **far)
        async with Prober(settings=prober_settings(nats_url, path)):
            pass

    await run_once({"a": "http://127.0.0.1:9/a", "b": "http://127.0.0.1:9/b"})
    await run_once({"a": "http://127.0.0.1:9/a-moved", "c": "http://127.0.0.1:9/c"})
    after_change = await stream_messages(nc, SERVICES_STREAM)
    await run_once({"a": "http://127.0.0.1:9/a-moved", "c": "http://127.0.0.1:9/c"})
    after_same = await stream_messages(nc, SERVICES_STREAM)

    last = {
        d.service_id: d for d in (ServiceDefined.model_validate_json(m.data) for m in after_change)
    }
    assert set(last) == {"a", "b", "c"}
    assert last["a"].active and last["a"].endpoints[0].url.endswith("/a-moved")
    assert last["b"].active is False and last["c"].active
    # Restarting with an unchanged catalog stores nothing new.
    assert [m.seq for m in after_same] == [m.seq for m in after_change]


async def test_manual_checks_by_request_reply(nats_url: str, nc: Client, tmp_path: Path) -> None:
    async with Target() as up, FlakyTarget(fail_every=1) as down:
        catalog = write_catalog(
            tmp_path / "services.yaml", {"up-svc": up.url, "down-svc": down.url}, interval="1h"
        )
        async with Prober(settings=prober_settings(nats_url, catalog)):
            one = await nc.request(PROBE_RUN_SUBJECT, b'{"serviceId": "down-svc"}', timeout=10)
            every = await nc.request(PROBE_RUN_SUBJECT, b"{}", timeout=10)
            unknown = await nc.request(PROBE_RUN_SUBJECT, b'{"serviceId": "nope"}', timeout=10)
            invalid = await nc.request(PROBE_RUN_SUBJECT, b'{"serviceId": 5}', timeout=10)
            reply = ProbeRunReply.model_validate_json(one.data)
            stored = await eventually(
                lambda: stored_checks(nc), until=lambda c: len(c) >= 3, what="manual checks"
            )
    assert reply.error is None and len(reply.results) == 1
    result = reply.results[0]
    assert (result.service_id, result.trigger, result.status) == ("down-svc", "manual", "down")
    assert json.loads(one.data)["results"][0]["checkId"] == str(result.check_id)  # camelCase
    all_results = ProbeRunReply.model_validate_json(every.data).results
    assert sorted((r.service_id, r.status) for r in all_results) == [
        ("down-svc", "down"),
        ("up-svc", "up"),
    ]
    assert ProbeRunReply.model_validate_json(unknown.data) == ProbeRunReply(
        error="unknown service 'nope'"
    )
    assert ProbeRunReply.model_validate_json(invalid.data).error == (
        "invalid request: serviceId: Input should be a valid string"
    )
    # Manual results are published like scheduled ones, under their own checkId.
    ids = {str(r.check_id) for r in [result, *all_results]}
    assert {msg_id for msg_id, _ in stored} == ids
    assert all(e.trigger == "manual" for _, e in stored)


async def test_nats_outage_loses_nothing_and_duplicates_nothing(
    infra: Infra, nats_url: str, tmp_path: Path
) -> None:
    async with Target() as target:
        catalog = write_catalog(tmp_path / "services.yaml", {"steady": target.url})
        prober = Prober(settings=prober_settings(nats_url, catalog))
        await prober.start()
        try:
            await eventually(lambda: _value(prober.publisher.published), until=lambda n: n >= 3)
            infra.nats.stop()
            try:
                # Monitoring goes on: new checks run and wait in the buffer.
                before = target.requests
                await eventually(lambda: _value(target.requests), until=lambda n: n >= before + 8)
                assert not prober.nats_connected
                assert prober.publisher.depth >= 5
            finally:
                infra.nats.start()
            await eventually(
                lambda: _value(prober.publisher.depth if prober.nats_connected else -1),
                until=lambda n: n == 0,
                timeout=30,
                what="buffer flushed after NATS returned",
            )
        finally:
            await prober.stop()
        checks_run = target.requests
    conn = await nats.connect(nats_url)
    try:
        stored = await stored_checks(conn)
    finally:
        await conn.close()
    ids = [msg_id for msg_id, _ in stored]
    assert len(ids) == len(set(ids)) == checks_run, (len(ids), len(set(ids)), checks_run)


def test_bad_catalog_refuses_to_start_with_one_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "services.yaml"
    bad.write_text(
        "services:\n  - id: face-compare\n    endpoints:\n      - {name: h, url: 'nope'}\n"
    )
    env = {
        **os.environ,
        "SERVICES_FILE": str(bad),
        "NATS_URL": "nats://127.0.0.1:1",
        "OPS_PORT": "0",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "services.prober"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, proc.stderr
    assert "services.yaml: service 'face-compare' (services[0]): endpoints[0].url:" in errors[0]


async def _value(value: int) -> int:
    return value


def test_prober_never_loads_the_database_driver() -> None:
    code = (
        "import sys, services.prober.main, services.prober.service; "
        "sys.exit(1 if 'asyncpg' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=60).returncode == 0
