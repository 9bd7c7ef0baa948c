"""The prober's NATS broker: every subject it publishes or answers, declared for AsyncAPI."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from faststream import ExceptionMiddleware
from faststream.message import StreamMessage
from faststream.nats import JStream, NatsBroker
from pydantic import ValidationError

from shared.events import (
    CHECK_SUBJECT,
    CHECKS_STREAM,
    PROBE_RUN_SUBJECT,
    SERVICE_SUBJECT,
    SERVICES_STREAM,
    CheckCompleted,
    ProbeRunReply,
    ProbeRunRequest,
    ServiceDefined,
)
from shared.settings import Settings

ProbeRunHandler = Callable[[ProbeRunRequest], Awaitable[ProbeRunReply]]
PROBE_RUN_QUEUE = "prober"


def build_broker(
    settings: Settings, *, on_probe_run: ProbeRunHandler | None = None, **connection: Any
) -> NatsBroker:
    """The broker, not connected. `on_probe_run` answers manual checks (None: docs only)."""
    # A request that cannot be served still gets an answer, not a requester's timeout.
    errors = ExceptionMiddleware(publish_handlers={Exception: _error_reply})
    broker = NatsBroker(
        [url.strip() for url in settings.nats_url.split(",") if url.strip()],
        name=f"watch-prober-{settings.prober_id}",
        # Monitoring outlives NATS outages: never give up reconnecting.
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        logger=logging.getLogger("faststream.prober"),
        description="Watch Server prober: runs checks, publishes results and the catalog.",
        middlewares=[errors],
        **connection,
    )

    @broker.subscriber(
        PROBE_RUN_SUBJECT,
        queue=PROBE_RUN_QUEUE,
        decoder=_decode_request,
        title=f"{PROBE_RUN_SUBJECT}:request",
        description=(
            "Run checks now (core NATS request/reply, queue group 'prober'). Body "
            "`{serviceId}` for one service or `{}` for all. Reply: a ProbeRunReply JSON with "
            "the CheckCompleted results (also published on watch.check.<serviceId> with "
            "trigger 'manual'), or `error` for an unknown service."
        ),
    )
    async def probe_run(request: ProbeRunRequest) -> bytes:
        if on_probe_run is None:
            return ProbeRunReply(error="prober is not running").to_wire()
        reply = await on_probe_run(request)
        return reply.to_wire()

    broker.publisher(
        CHECK_SUBJECT,
        stream=JStream(CHECKS_STREAM, declare=False),
        schema=CheckCompleted,
        title=f"{CHECK_SUBJECT}:publish",
        description=(
            "One finished check per message, on watch.check.<serviceId> in stream "
            "WATCH_CHECKS, with header Nats-Msg-Id = checkId (retries are deduplicated)."
        ),
    )
    broker.publisher(
        SERVICE_SUBJECT,
        stream=JStream(SERVICES_STREAM, declare=False),
        schema=ServiceDefined,
        title=f"{SERVICE_SUBJECT}:publish",
        description=(
            "The catalog entry of a service on watch.service.<serviceId> (stream "
            "WATCH_SERVICES keeps the last per subject); `active: false` once removed."
        ),
    )
    return broker


async def _decode_request(msg: StreamMessage[Any]) -> Any:
    """JSON body; an empty body means `{}` (every service)."""
    body = msg.body or b""
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except ValueError:
        return body  # fails validation, answered by `_error_reply`


def _error_reply(exc: Exception) -> bytes:
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}"  # [0]: param name
            for e in exc.errors()
        )
        return ProbeRunReply(error=f"invalid request: {problems}").to_wire()
    return ProbeRunReply(error=f"probe run failed: {type(exc).__name__}").to_wire()
