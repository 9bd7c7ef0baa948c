"""The api's NATS interface for the AsyncAPI document: the `watch.probe.run` request it sends."""

from __future__ import annotations

from faststream.nats import NatsBroker

from shared.events import PROBE_RUN_SUBJECT, ProbeRunRequest
from shared.settings import Settings


def build_broker(settings: Settings) -> NatsBroker:
    """Declare (without connecting) what the api publishes; the reply is a ProbeRunReply."""
    broker = NatsBroker(
        [u.strip() for u in settings.nats_url.split(",") if u.strip()],
        description="Watch Server api: asks a prober to run checks now (POST /api/health-check).",
    )
    broker.publisher(
        PROBE_RUN_SUBJECT,
        title=f"{PROBE_RUN_SUBJECT}:request",
        description=(
            "Core NATS request (not JetStream): run checks of one service now, or of every "
            "service when serviceId is null. The prober replies with a ProbeRunReply "
            "{results: [CheckCompleted], error}; no responder means no prober is running."
        ),
        schema=ProbeRunRequest,
    )
    return broker
