"""Entry point: settings, logging, run until SIGTERM/SIGINT, then stop gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal

from services.recorder.service import Recorder
from shared.logs import get_log, setup_logging
from shared.settings import Settings, load_settings

log = get_log(__name__)

# A batch of 1,000 results allocates tens of thousands of objects that reference counting
# frees anyway; with the default threshold (700) the collector ran dozens of times per batch
# and each run walked them: about a quarter of the recorder's CPU per result
# (bench/bench_ingest.py). uvloop was measured too and did not help here.
GC_THRESHOLDS = (20_000, 20, 50)


async def run(settings: Settings) -> None:
    """Run the recorder until a stop signal arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    recorder = Recorder(settings=settings)
    starting = asyncio.create_task(recorder.start())
    waiting = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # a failed start raises here
            await waiting
        else:  # stopped while still waiting for the database
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
    finally:
        waiting.cancel()
        await recorder.stop()


def main() -> None:
    """`python -m services.recorder`."""
    settings = load_settings("recorder")
    setup_logging("recorder", settings.log_level)
    gc.freeze()  # what start-up built lives as long as the process: out of the collector's view
    gc.set_threshold(*GC_THRESHOLDS)
    asyncio.run(run(settings))
