"""Hot reload of the catalog file in a running prober, against real NATS and real targets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import nats
import pytest

from services.prober.service import Prober
from shared.events import SERVICES_STREAM, ServiceDefined
from shared.settings import Settings
from tests.polling import eventually
from tests.targets import Target


def write(path: Path, services: dict[str, str]) -> None:
    lines = ["services:"]
    for service_id, url in services.items():
        lines += [
            f"  - id: {service_id}",
            "    interval: 200ms",
            "    timeout: 1s",
            f"    endpoints: [{{name: health, url: '{url}'}}]",
        ]
    path.write_text("\n".join(lines) + "\n")


async def definitions(nats_url: str) -> dict[str, ServiceDefined]:
    """The last ServiceDefined per service in WATCH_SERVICES."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(SERVICES_STREAM, subjects_filter="watch.service.>")
        found = {}
        for subject in info.state.subjects or {}:
            msg = await js.get_last_msg(SERVICES_STREAM, subject)
            d = ServiceDefined.model_validate_json(msg.data)
            found[d.service_id] = d
        return found
    finally:
        await nc.close()


async def paths(target: Target) -> list[str]:
    return [s.path for s in target.served]


async def test_file_change_adds_removes_and_changes_services_and_a_bad_one_is_refused(
    nats_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "services.yaml"
    async with Target() as target:
        base = target.base_url
        write(path, {"a": f"{base}/a", "b": f"{base}/b"})
        settings = Settings(nats_url=nats_url, services_file=str(path), region="test", ops_port=0)
        async with Prober(settings=settings) as prober:
            await eventually(
                lambda: paths(target), until=lambda p: {"/a", "/b"} <= set(p), what="a and b"
            )
            write(path, {"a": f"{base}/a2", "c": f"{base}/c"})
            await eventually(
                lambda: paths(target),
                until=lambda p: {"/a2", "/c"} <= set(p),
                timeout=15,
                what="the changed and the added service checked",
            )
            mark = target.requests
            await eventually(
                lambda: paths(target),
                until=lambda p: p[mark:].count("/c") >= 5,
                what="a few more turns",
            )
            assert "/b" not in (await paths(target))[mark:]  # removed: no longer checked
            assert "/a" not in (await paths(target))[mark:]  # changed: the new url only
            published = await eventually(
                lambda: definitions(nats_url),
                until=lambda d: set(d) == {"a", "b", "c"} and not d["b"].active,
                what="b published as inactive",
            )
            assert published["a"].endpoints[0].url.endswith("/a2")

            # An invalid catalog is refused with one ERROR line; the running one goes on.
            path.write_text("services:\n  - id: c\n    intervall: 1s\n")
            await eventually(
                lambda: _errors(caplog), until=lambda e: len(e) >= 1, timeout=15, what="refusal"
            )
            mark = target.requests
            await eventually(
                lambda: paths(target),
                until=lambda p: p[mark:].count("/c") >= 3 and p[mark:].count("/a2") >= 3,
                what="the old catalog still running",
            )
            assert prober.catalog is not None
            assert [s.id for s in prober.catalog.services] == ["a", "c"]
    errors = await _errors(caplog)
    assert len(errors) == 1, errors
    assert errors[0].startswith("catalog reload refused, keeping the running catalog: ")
    assert "service 'c' (services[0]): intervall: unknown field" in errors[0]
    reloaded = [r for r in caplog.records if r.getMessage() == "catalog reloaded"]
    assert len(reloaded) == 1
    fields: Any = reloaded[0].__dict__["fields"]
    assert (fields["added"], fields["removed"], fields["changed"]) == ("c", "b", "a")


async def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
