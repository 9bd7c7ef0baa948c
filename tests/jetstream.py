"""A JetStream context on the test's NATS, with Watch Server's streams declared."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats
from nats.js import JetStreamContext

from shared.settings import Settings
from shared.streams import ensure_streams


@asynccontextmanager
async def jetstream(settings: Settings) -> AsyncIterator[JetStreamContext]:
    """Connect, declare the streams, yield the JetStream context, close."""
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js, settings)
        yield js
    finally:
        await nc.close()
