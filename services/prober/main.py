"""Entry point: `python -m services.prober` runs the prober until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys

from pydantic import ValidationError

from services.prober import runtime
from services.prober.broker import build_broker
from services.prober.catalog import CatalogError
from services.prober.cluster import ClusterSettings
from services.prober.service import Prober
from shared.logs import get_log, setup_logging
from shared.settings import Settings, load_settings

__all__ = ["build_broker", "main", "run"]

log = get_log("services.prober")

EXIT_BAD_CATALOG = 2


async def run(settings: Settings, cluster: ClusterSettings | None = None) -> int:
    """Run the prober until a stop signal; the exit code (2 for a bad catalog)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    prober = Prober(settings=settings, cluster=cluster)
    loop.add_signal_handler(signal.SIGHUP, prober.request_reload)
    try:
        await prober.start()
    except CatalogError as exc:
        log.error(f"invalid catalog: {exc}")
        return EXIT_BAD_CATALOG
    try:
        await stop.wait()
        log.info("stopping", reason="signal")
    finally:
        await prober.stop()
    return 0


def main() -> None:
    """Load settings, set up logging and run the prober."""
    settings = load_settings("prober")
    try:
        cluster = ClusterSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"PROBER_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise SystemExit(f"prober: invalid configuration: {problems}") from None
    setup_logging("prober", settings.log_level)
    runtime.tune_gc()
    sys.exit(runtime.run(run(settings, cluster)))
