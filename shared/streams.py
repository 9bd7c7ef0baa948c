"""JetStream stream declarations: the one place that says how each stream is configured."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from shared import events
from shared.settings import Settings

DAY = 86_400.0
DEDUP_WINDOW_SECONDS = 300.0  # DESIGN.md asks >= 2 min; 5 min also covers a prober's buffer retry.


def stream_configs(settings: Settings) -> list[StreamConfig]:
    """Every stream Watch Server owns, configured from settings."""
    return [
        StreamConfig(
            name=events.CHECKS_STREAM,
            subjects=[events.CHECK_SUBJECTS],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            max_age=settings.checks_max_age_days * DAY,
            duplicate_window=DEDUP_WINDOW_SECONDS,
            discard=DiscardPolicy.OLD,
        ),
        StreamConfig(
            name=events.SERVICES_STREAM,
            subjects=[events.SERVICE_SUBJECTS],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            max_msgs_per_subject=1,
            duplicate_window=DEDUP_WINDOW_SECONDS,
        ),
        StreamConfig(
            name=events.EVENTS_STREAM,
            subjects=[events.EVENT_SUBJECTS],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            max_age=90 * DAY,
            duplicate_window=DEDUP_WINDOW_SECONDS,
        ),
        StreamConfig(
            name=events.DLQ_STREAM,
            subjects=[events.DLQ_SUBJECTS],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            max_age=30 * DAY,
            duplicate_window=DEDUP_WINDOW_SECONDS,
        ),
    ]


async def ensure_streams(js: JetStreamContext, settings: Settings) -> None:
    """Create the streams, or bring an existing one's settings up to date (idempotent)."""
    for config in stream_configs(settings):
        try:
            await js.stream_info(config.name)  # type: ignore[arg-type]
        except NotFoundError:
            try:
                await js.add_stream(config)
                continue
            except BadRequestError:  # another replica created it first
                pass
        await js.update_stream(config)
