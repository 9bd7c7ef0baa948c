"""`python -m services.aggregator`: run the aggregator until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from services.aggregator.broker import build_broker
from services.aggregator.service import Aggregator
from shared.logs import setup_logging
from shared.settings import Settings, load_settings

__all__ = ["build_broker", "main", "run"]


async def run(settings: Settings) -> None:
    """Start the aggregator and stop it gracefully on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    aggregator = Aggregator(settings=settings)
    starting = asyncio.create_task(aggregator.start())
    waiting = asyncio.create_task(stop.wait())
    try:
        # A signal during start (e.g. waiting for PostgreSQL) must stop it too.
        await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        else:
            starting.result()
            await waiting
    finally:
        waiting.cancel()
        await aggregator.stop()


def main() -> None:
    """Entry point: settings, logging, run."""
    settings = load_settings("aggregator")
    setup_logging("aggregator", settings.log_level)
    asyncio.run(run(settings))
