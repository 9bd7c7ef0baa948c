"""Prober benchmark: N endpoints at a fixed interval against a real HTTP server on loopback.

    .venv/bin/python bench/bench_prober.py                      # 5k, 20k, 50k at 30 s
    .venv/bin/python bench/bench_prober.py --sizes 5000 --interval 10 --duration 10

Each size is measured over one interval after a warm-up of one interval + 5 s, so the
window shows the steady state (every service already had its first check).

Target: nginx (installed with apt-get when missing and we are root), answering `ok` with
keep-alive; otherwise a 2-process aiohttp server (the table says which). NATS: the embedded
nats-server of `make run` (deploy/local/embedded.py), JetStream on a temporary directory.

Each measurement runs in its own process, one after the other, so CPU time and RSS are that
process's alone:
  prober         the real Prober (schedule, probe, buffer, JetStream publish with acks),
                 lateness taken from the published events (startedAt - scheduledAt)
  bare-aiohttp   a bare loop issuing the same requests at the same rate with aiohttp
  httpx-aiohttp  the same loop through httpx over the aiohttp transport (no publish)
  httpx          the same loop through plain httpx (httpcore)
CPU ms/check = process CPU time (user + system) over the measured window / checks in it.
The machine may be shared: compare rows of the same run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.prober_target import start_target  # noqa: E402

CONCURRENCY = 500


# --------------------------------------------------------------------------- children
def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> tuple[float, float]:
    """Current and peak resident set size, MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.50), "p99": at(0.99), "max": ordered[-1]}


def catalog_yaml(base: str, n: int, interval: float) -> str:
    lines = ["services:"]
    for i in range(n):
        lines.append(
            f"  - {{id: e{i}, interval: {interval}s, timeout: 5s, "
            f"endpoints: [{{name: h, url: '{base}/e/{i}'}}]}}"
        )
    return "\n".join(lines) + "\n"


async def child_prober(args: argparse.Namespace) -> dict[str, Any]:
    """The real prober; lateness is measured by the parent from the published events."""
    from services.prober.catalog import load_catalog
    from services.prober.service import Prober
    from shared.logs import setup_logging
    from shared.settings import Settings

    setup_logging("prober", args.log_level)
    path = Path(args.workdir) / f"services-{args.n}.yaml"
    path.write_text(catalog_yaml(args.base, args.n, args.interval))
    settings = Settings(
        nats_url=args.nats,
        services_file=str(path),
        region="bench",
        prober_id="bench",
        ops_port=0,
        prober_concurrency=CONCURRENCY,
        log_level=args.log_level,
    )
    t0 = time.perf_counter()
    catalog = load_catalog(path, settings=settings)
    load_s = time.perf_counter() - t0
    prober = Prober(settings=settings, catalog=catalog, watch_file=False)
    t0 = time.perf_counter()
    await prober.start()
    assert prober._connect_task is not None
    await prober._connect_task  # streams declared and the catalog published
    start_s = time.perf_counter() - t0
    await asyncio.sleep(args.warmup)
    gc_time = _GcTimer()
    window_start, cpu0, published0 = time.time(), _cpu(), prober.publisher.published
    ran0 = _checks_run(prober)
    await asyncio.sleep(args.duration)
    window_end, cpu1, published1 = time.time(), _cpu(), prober.publisher.published
    ran1 = _checks_run(prober)
    gc_time.stop()
    rss, peak = _rss_mb()
    skipped = prober._scheduler.skipped if prober._scheduler else 0
    depth = prober.publisher.depth
    await prober.stop()
    return {
        "window": [window_start, window_end],
        "checks": published1 - published0,
        "ran": ran1 - ran0,
        "gc_s": gc_time.cpu_s,
        "gc_longest_ms": gc_time.longest_s * 1000,
        "gc_runs": gc_time.runs,
        "cpu_s": cpu1 - cpu0,
        "rss_mb": rss,
        "peak_mb": peak,
        "load_s": load_s,
        "start_s": start_s,
        "skipped": skipped,
        "buffer_at_end": depth,
    }


class _GcTimer:
    """CPU time spent in the cyclic garbage collector while it is installed."""

    def __init__(self) -> None:
        self.cpu_s = 0.0
        self.longest_s = 0.0
        self.runs = [0, 0, 0]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            spent = time.process_time() - self._started
            self.cpu_s += spent
            self.longest_s = max(self.longest_s, spent)
            self.runs[info["generation"]] += 1

    def stop(self) -> None:
        gc.callbacks.remove(self._callback)


def _checks_run(prober: Any) -> float:
    """Checks completed so far (published or not), from the prober's own counter."""
    registry = prober.metrics.registry
    return sum(
        registry.get_sample_value("prober_checks_total", {"status": status}) or 0.0
        for status in ("up", "degraded", "down")
    )


async def child_bare(args: argparse.Namespace) -> dict[str, Any]:
    """The same requests at the same rate, without the prober around them."""
    import aiohttp
    import httpx

    urls = [f"{args.base}/e/{i}" for i in range(args.n)]
    sem = asyncio.Semaphore(CONCURRENCY)
    loop = asyncio.get_running_loop()
    late: list[float] = []
    done = 0
    errors = 0
    window = [0.0, 0.0]
    get: Callable[[str], Any]
    closers: list[Callable[[], Any]] = []
    if args.kind == "bare-aiohttp":
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONCURRENCY, keepalive_timeout=30)
        )
        closers.append(session.close)

        async def get_aiohttp(url: str) -> int:
            async with session.get(url) as response:
                await response.read()
                return response.status

        get = get_aiohttp
    else:
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        if args.kind == "httpx-aiohttp":
            from httpx_aiohttp import AiohttpTransport

            client = httpx.AsyncClient(transport=AiohttpTransport(limits=limits))
        else:
            client = httpx.AsyncClient(limits=limits)
        closers.append(client.aclose)

        async def get_httpx(url: str) -> int:
            response = await client.get(url, timeout=5)
            return response.status_code

        get = get_httpx

    async def one(url: str, due: float, measured: bool) -> None:
        nonlocal done, errors
        async with sem:
            lateness = loop.time() - due
            try:
                status = await get(url)
                ok = status == 200
            except Exception:
                ok = False
        if measured:
            late.append(lateness)
            done += 1
            errors += not ok

    period = args.interval / args.n
    start = loop.time() + 0.2
    measure_from = start + args.warmup
    end = measure_from + args.duration
    tasks: set[asyncio.Task[None]] = set()
    k = 0
    cpu0 = None
    while True:
        due = start + k * period
        if due >= end:
            break
        now = loop.time()
        if cpu0 is None and now >= measure_from:
            cpu0, window[0] = _cpu(), time.time()
        if due > now + 0.001:
            await asyncio.sleep(due - now)
        task = asyncio.create_task(one(urls[k % args.n], due, due >= measure_from))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        k += 1
        if k % 64 == 0:
            await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    cpu1, window[1] = _cpu(), time.time()
    rss, peak = _rss_mb()
    for close in closers:
        await close()
    stats = _percentiles(late)
    return {
        "window": window,
        "checks": done,
        "errors": errors,
        "cpu_s": cpu1 - (cpu0 or cpu1),
        "rss_mb": rss,
        "peak_mb": peak,
        "lateness": stats,
    }


# --------------------------------------------------------------------------- parent
def run_child(kind: str, n: int, args: argparse.Namespace, base: str, nats_url: str) -> Any:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--n",
        str(n),
        "--interval",
        str(args.interval),
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
        "--base",
        base,
        "--nats",
        nats_url,
        "--workdir",
        args.workdir,
        "--log-level",
        args.log_level,
        *(["--no-tuning"] if args.no_tuning else []),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1800)
    result_lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not result_lines:
        raise RuntimeError(f"{kind} {n} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(result_lines[-1][len("RESULT ") :])


class EventTap:
    """Subscribes to watch.check.> and keeps (scheduledAt, startedAt) of every check."""

    def __init__(self, nats_url: str) -> None:
        self.url = nats_url
        self.seen: list[tuple[float, float]] = []

    async def __aenter__(self) -> EventTap:
        import nats

        self.nc = await nats.connect(self.url)

        async def on_msg(msg: Any) -> None:
            event = json.loads(msg.data)
            scheduled = datetime.fromisoformat(event["scheduledAt"]).timestamp()
            started = datetime.fromisoformat(event["startedAt"]).timestamp()
            self.seen.append((scheduled, started))

        await self.nc.subscribe(
            "watch.check.>", cb=on_msg, pending_msgs_limit=2_000_000, pending_bytes_limit=-1
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.drain()

    def lateness(self, window: list[float]) -> dict[str, float | None]:
        return _percentiles(
            [started - scheduled for scheduled, started in self.seen if window[0] <= scheduled]
        )


async def measure_prober(n: int, args: argparse.Namespace, base: str, nats_url: str) -> Any:
    async with EventTap(nats_url) as tap:
        result = await asyncio.to_thread(run_child, "prober", n, args, base, nats_url)
        await asyncio.sleep(1)
    window = result["window"]
    # Only checks due inside the window, so a backlog at the end is not hidden.
    in_window = [(s, st) for s, st in tap.seen if window[0] <= s < window[1]]
    result["lateness"] = _percentiles([st - s for s, st in in_window])
    result["events"] = len(in_window)
    return result


def purge_checks(nats_url: str) -> None:
    async def purge() -> None:
        import nats

        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            for name in ("WATCH_CHECKS", "WATCH_SERVICES"):
                with contextlib.suppress(Exception):  # absent on the first run
                    await js.delete_stream(name)
        finally:
            await nc.close()

    asyncio.run(purge())


def row(kind: str, n: int, args: argparse.Namespace, r: dict[str, Any]) -> str:
    lat = r["lateness"]
    duration = r["window"][1] - r["window"][0]
    rate = r["checks"] / duration if duration > 0 else 0.0
    cpu_ms = r["cpu_s"] * 1000 / r["checks"] if r["checks"] else float("nan")
    cores = r["cpu_s"] / duration if duration > 0 else 0.0

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1000:.1f}"

    return (
        f"| {kind} | {n:,} | {n / args.interval:,.0f} | {rate:,.0f} | {ms(lat['p50'])} | "
        f"{ms(lat['p99'])} | {cpu_ms:.3f} | {cores * 100:.0f} % | {r['rss_mb']:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="5000,20000,50000")
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--duration", type=float, default=None, help="default: one interval")
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds before measuring; default one interval + 5 s, so every service has "
        "had its first check (requests built, first-status log lines) and the window shows "
        "the steady state",
    )
    parser.add_argument(
        "--baselines",
        default="bare-aiohttp,httpx-aiohttp,httpx",
        help="bare loops to run next to the prober (comma-separated)",
    )
    parser.add_argument(
        "--httpx-sizes",
        default="5000",
        help="sizes for the httpx loops (plain httpx cannot keep up with large ones)",
    )
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--no-tuning",
        action="store_true",
        help="run the prober on plain asyncio with default GC thresholds (to compare)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--nats", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.duration is None:
        args.duration = args.interval
    if args.warmup is None:
        args.warmup = args.interval + 5.0

    if args.child:
        args.kind = args.child
        runner = child_prober if args.child == "prober" else child_bare
        if args.child == "prober" and not args.no_tuning:
            from services.prober import runtime

            runtime.tune_gc()  # as `python -m services.prober` does
            result = runtime.run(runner(args))
        else:
            result = asyncio.run(runner(args))
        print("RESULT " + json.dumps(result), flush=True)
        return

    from deploy.local.embedded import EmbeddedNats

    workdir = tempfile.mkdtemp(prefix="bench-prober-")
    args.workdir = workdir
    sizes = [int(s) for s in args.sizes.split(",") if s]
    baselines = [b for b in args.baselines.split(",") if b]
    httpx_sizes = {int(s) for s in args.httpx_sizes.split(",") if s}
    target = start_target(Path(workdir) / "target")
    nats_server = EmbeddedNats(Path(workdir) / "nats")
    rows: list[str] = []
    try:
        nats_server.start()
        print(f"target: {target.kind} at {target.base_url}", flush=True)
        for n in sizes:
            purge_checks(nats_server.url)
            result = asyncio.run(measure_prober(n, args, target.base_url, nats_server.url))
            rows.append(row("prober", n, args, result))
            print(
                rows[-1],
                f"(events {result['events']}, ran {result['ran']:.0f}, "
                f"GC {result['gc_s'] / max(result['cpu_s'], 1e-9) * 100:.0f} % of CPU "
                f"(runs by generation {result['gc_runs']}, longest "
                f"{result['gc_longest_ms']:.0f} ms), "
                f"skipped {result['skipped']}, "
                f"catalog load {result['load_s']:.1f} s, start {result['start_s']:.1f} s, "
                f"peak RSS {result['peak_mb']:.0f} MB, buffered at end {result['buffer_at_end']})",
                flush=True,
            )
            for kind in baselines:
                if kind != "bare-aiohttp" and n not in httpx_sizes:
                    continue
                result = run_child(kind, n, args, target.base_url, nats_server.url)
                rows.append(row(kind, n, args, result))
                print(rows[-1], f"(errors {result['errors']})", flush=True)
    finally:
        nats_server.stop()
        target.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(
        f"Target: {target.kind} on loopback; interval {args.interval:g} s, measured "
        f"{args.duration:g} s after {args.warmup:g} s warm-up; concurrency {CONCURRENCY}; "
        f"{os.cpu_count()} CPUs; log level {args.log_level}."
    )
    print()
    print(
        "| client | endpoints | due/s | checks/s | lateness p50 ms | lateness p99 ms "
        "| CPU ms/check | CPU | RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for line in rows:
        print(line)
    print()
    print("Command: " + " ".join(["python", "bench/bench_prober.py", *sys.argv[1:]]))
    print(f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.")


if __name__ == "__main__":
    main()
