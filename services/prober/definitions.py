"""Publishing the catalog as `ServiceDefined` events on `watch.service.<id>` (WATCH_SERVICES).

WATCH_SERVICES keeps the last message per subject, so it is the catalog as last published.
At start the prober compares the file with it: new or changed services are published, services
no longer in the file are published again with `active: false`, unchanged ones are left alone.
The `Nats-Msg-Id` is a hash of the definition plus the sequence it replaces, so replicas
starting together store each change once, and an edit reverted later is still stored.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from services.prober.catalog import Catalog
from shared.events import SERVICE_SUBJECT, SERVICE_SUBJECTS, SERVICES_STREAM, ServiceDefined
from shared.logs import get_log

log = get_log(__name__)

PUBLISH_TIMEOUT = 5.0
IN_FLIGHT = 256  # concurrent reads/publishes: 50,000 services one by one took minutes


@dataclass
class CatalogSync:
    """What publishing the catalog changed."""

    published: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deactivated: list[str] = field(default_factory=list)


def digest(definition: ServiceDefined) -> str:
    """A hash of what a definition says, ignoring when it was said."""
    body = definition.model_dump_json(by_alias=True, exclude={"defined_at"})
    return hashlib.sha256(body.encode()).hexdigest()[:32]


async def read_published(*, js: JetStreamContext) -> dict[str, tuple[int, ServiceDefined]]:
    """The last `ServiceDefined` of every service in WATCH_SERVICES, with its sequence."""
    info = await js.stream_info(SERVICES_STREAM, subjects_filter=SERVICE_SUBJECTS)
    found: dict[str, tuple[int, ServiceDefined]] = {}
    limit = asyncio.Semaphore(IN_FLIGHT)

    async def read(subject: str) -> None:
        async with limit:
            try:
                msg = await js.get_last_msg(SERVICES_STREAM, subject)
            except NotFoundError:  # purged between the listing and now
                return
        try:
            definition = ServiceDefined.model_validate_json(msg.data or b"")
        except ValidationError:
            log.warning("unreadable service definition ignored", subject=subject, seq=msg.seq)
            return
        found[definition.service_id] = (msg.seq or 0, definition)

    await asyncio.gather(*(read(subject) for subject in info.state.subjects or {}))
    return found


async def publish_catalog(catalog: Catalog, *, js: JetStreamContext) -> CatalogSync:
    """Bring WATCH_SERVICES in line with the catalog file."""
    now = datetime.now(UTC)
    published = await read_published(js=js)
    sync = CatalogSync()
    wanted = {s.id: s.definition(defined_at=now) for s in catalog.services}
    outgoing: list[tuple[ServiceDefined, int]] = []
    for service_id, definition in wanted.items():
        last = published.get(service_id)
        if last is not None and digest(last[1]) == digest(definition):
            sync.unchanged.append(service_id)
            continue
        outgoing.append((definition, last[0] if last else 0))
        sync.published.append(service_id)
    for service_id, (seq, old) in published.items():
        if service_id in wanted or not old.active:
            continue
        outgoing.append((old.model_copy(update={"active": False, "defined_at": now}), seq))
        sync.deactivated.append(service_id)
    limit = asyncio.Semaphore(IN_FLIGHT)

    async def send(definition: ServiceDefined, replaces: int) -> None:
        async with limit:
            await _publish(definition, replaces=replaces, js=js)

    await asyncio.gather(*(send(d, r) for d, r in outgoing))
    log.info(
        "catalog published",
        published=len(sync.published),
        unchanged=len(sync.unchanged),
        deactivated=",".join(sync.deactivated) or "-",
    )
    return sync


async def _publish(definition: ServiceDefined, *, replaces: int, js: JetStreamContext) -> None:
    await js.publish(
        SERVICE_SUBJECT.format(service_id=definition.service_id),
        definition.to_wire(),
        timeout=PUBLISH_TIMEOUT,
        stream=SERVICES_STREAM,
        headers={"Nats-Msg-Id": f"{definition.service_id}:{digest(definition)}:{replaces}"},
    )
