"""Metrics API benchmark: answers from the rollups vs the same answers from the raw tables.

    .venv/bin/python bench/bench_api.py            # 1,000 services, a year, 50 M then 100 M
    .venv/bin/python bench/bench_api.py --quick    # 100 services, 60 days: a few minutes
    .venv/bin/python bench/bench_api.py --generate-only --workdir /big/disk   # data only
    .venv/bin/python bench/bench_api.py --reuse /big/disk/watch-bench-api-XXXX   # measure it

What it does, in one run:
1. starts an embedded PostgreSQL (deploy/local/embedded.py, fsync off) in a temporary folder
   and applies the migrations;
2. pass 1: generates raw results for every service over `--days` days, one check per
   `--interval` seconds (630 s: 50 M results for 1,000 services over a year), in SQL
   (bench/api_generate.py: generate_series, one UTC day per transaction, two connections at
   once) into whatever raw layout the migrations created, with the matching daily rollups and
   day records (whole period) and hourly rollups (last `--hourly-days`), all computed from
   the same generated rows, so the rollups equal the raw data;
3. starts the api as a process (`python -m services.api`, its default read-only role), checks
   that its answers equal the raw queries' for 5 services (percentiles within 1 %), and loads
   GET /api/metrics/{id}?days=30 and /api/sla/{id}?days=30 with wrk (Debian's `wrk`, installed
   with apt-get when missing and root; one thread, a Lua script choosing a random service per
   request) at 1, 4, 8, 16 and 32 requests in flight, `--seconds` each; next to each row the
   CPU per request of the api process, of PostgreSQL and of wrk itself (so it shows the client
   is not the bottleneck); then the api's own SQL without HTTP, and the same answers computed
   by SQL over the raw tables (the seed's names watch_server_logs / api_response_times);
4. pass 2: a second pass of raw results shifted by half an interval (twice the raw rows, the
   rollup row count unchanged), and measures again.

wrk keeps each connection's next request waiting for the previous answer (a closed loop), so
"in flight" is the concurrency, and queueing on a busy machine shows up in p99 as it would for
real clients. The api, the database and wrk share the machine (and other work may run on it):
compare rows of the same run, not runs; the load average is printed beside each row.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.api_generate import WORKERS, RawLayout, detect_layout, generate_step, prepare  # noqa: E402
from deploy.local.embedded import EmbeddedPostgres, free_port  # noqa: E402
from services.api.store import PostgresStore  # noqa: E402
from shared.db import migrate  # noqa: E402

SLA_TARGETS = (99.0, 99.5, 99.9)


@dataclass
class Stat:
    """Latencies of one measurement."""

    name: str
    concurrency: int
    latencies_ms: list[float]
    wall_seconds: float

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.wall_seconds


async def measure(
    name: str, call: Callable[[], Awaitable[None]], *, count: int, concurrency: int
) -> Stat:
    """Run `call` `count` times, `concurrency` at once; client-side latency of each."""
    latencies: list[float] = []
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Stat(name, concurrency, latencies, time.perf_counter() - started)


ROUNDS = 3  # one-at-a-time figures: the best of this many rounds (the machine is shared)


async def best_of(
    name: str, call: Callable[[], Awaitable[None]], *, count: int, concurrency: int = 1
) -> Stat:
    """The round with the lowest median, so a burst of other work does not decide it."""
    rounds = [
        await measure(name, call, count=count, concurrency=concurrency) for _ in range(ROUNDS)
    ]
    return min(rounds, key=lambda s: statistics.median(s.latencies_ms))


class ApiProcess:
    """`python -m services.api` against the bench database, stopped by PID."""

    def __init__(self, dsn: str, log: Path, *, source: Path = REPO) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update(
            DATABASE_URL=dsn,
            NATS_URL="nats://127.0.0.1:1",  # no NATS: the api reads PostgreSQL only here
            API_PORT=str(self.port),
            API_HOST="127.0.0.1",
            LOG_LEVEL="warning",
            METRICS_CACHE_SECONDS="0",
            PYTHONUNBUFFERED="1",
        )
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.api"],
            cwd=source,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def wait(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{self.url}/health") as r:
                    if r.status == 200 and (await r.json())["database"] == "up":
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError("the api did not come up; see the api log")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


WRK_SCRIPT = """
local services = tonumber(os.getenv("BENCH_SERVICES"))
local template = os.getenv("BENCH_PATH")
function init(args) math.randomseed(tonumber(os.getenv("BENCH_SEED"))) end
request = function()
  local sid = string.format("svc-%04d", math.random(1, services))
  return wrk.format("GET", string.format(template, sid))
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "errors": %d, "non2xx": %d, "p50": %d, "p99": %d, "us": %d}\\n',
    summary.requests, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), summary.duration))
end
"""


def wrk_binary() -> str:
    """wrk on PATH; installed from Debian's packages when missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk missing: apt-get install -y wrk", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "wrk"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True)
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("bench-api needs wrk (Debian package `wrk`): install it and rerun")
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live children (from /proc), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:  # fields[1]: the parent pid
            total += int(fields[11]) + int(fields[12])
    return total / tick


@dataclass
class Load:
    """One wrk run: closed loop, `concurrency` connections each with one request in flight."""

    name: str
    concurrency: int
    requests: int
    p50_ms: float
    p99_ms: float
    rate: float
    api_cpu_ms: float  # per request: the api process
    db_cpu_ms: float  # per request: the PostgreSQL server processes
    client_cpu_ms: float  # per request: wrk


def run_wrk(
    binary: str,
    *,
    url: str,
    path: str,
    services: int,
    concurrency: int,
    seconds: float,
    script: Path,
    api_pid: int,
    db_pid: int,
) -> Load:
    """Random services from svc-0001 on, `concurrency` in flight for `seconds`."""
    env = {
        **os.environ,
        "BENCH_SERVICES": str(services),
        "BENCH_PATH": path.replace("{}", "%s"),
        "BENCH_SEED": str(7 + concurrency),
    }
    cmd = [binary, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    cmd += ["-s", str(script), url]
    before = (tree_cpu_seconds(api_pid), tree_cpu_seconds(db_pid), os.times())
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    after = (tree_cpu_seconds(api_pid), tree_cpu_seconds(db_pid), os.times())
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    got = json.loads(line.removeprefix("WRKJSON "))
    if got["errors"] or got["non2xx"]:
        raise RuntimeError(f"wrk {path} at {concurrency}: {got}")
    n = max(1, got["requests"])
    client = (after[2].children_user + after[2].children_system) - (
        before[2].children_user + before[2].children_system
    )
    return Load(
        name=path,
        concurrency=concurrency,
        requests=got["requests"],
        p50_ms=got["p50"] / 1000,
        p99_ms=got["p99"] / 1000,
        rate=got["requests"] / (got["us"] / 1e6),
        api_cpu_ms=1000 * (after[0] - before[0]) / n,
        db_cpu_ms=1000 * (after[1] - before[1]) / n,
        client_cpu_ms=1000 * client / n,
    )


RAW_METRICS = """
WITH calls AS (
    SELECT ok, status_code, response_time_ms, error_type FROM api_response_times
    WHERE service_id = $1 AND started_at >= $2 AND started_at < $3
)
SELECT count(*) AS total,
       count(*) FILTER (WHERE ok) AS successful,
       avg(response_time_ms) FILTER (WHERE status_code IS NOT NULL) AS avg_ms,
       min(response_time_ms) FILTER (WHERE status_code IS NOT NULL) AS min_ms,
       max(response_time_ms) FILTER (WHERE status_code IS NOT NULL) AS max_ms,
       percentile_cont(ARRAY[0.5, 0.9, 0.95, 0.99]) WITHIN GROUP (ORDER BY response_time_ms)
           FILTER (WHERE status_code IS NOT NULL) AS pcts,
       (SELECT jsonb_object_agg(error_type, n) FROM (
            SELECT error_type, count(*) AS n FROM calls
            WHERE error_type IS NOT NULL GROUP BY 1) e) AS errors,
       (SELECT count(*) FROM watch_server_logs
        WHERE service_id = $1 AND started_at >= $2 AND started_at < $3
          AND status = 'degraded') AS degraded
FROM calls
"""

RAW_SLA = """
WITH calls AS (
    SELECT started_at, ok, within_threshold FROM api_response_times
    WHERE service_id = $1 AND started_at >= $2 AND started_at < $3
), days AS (
    SELECT (started_at AT TIME ZONE 'UTC')::date AS d, count(*) AS t,
           count(*) FILTER (WHERE ok) AS k
    FROM calls GROUP BY 1
)
SELECT (SELECT count(*) FROM calls) AS total,
       (SELECT count(*) FILTER (WHERE ok) FROM calls) AS successful,
       (SELECT count(*) FILTER (WHERE ok AND within_threshold) FROM calls) AS within,
       (SELECT count(*) FROM days WHERE 100.0 * k / t < $4) AS breaches,
       (SELECT count(*) FROM watch_server_logs
        WHERE service_id = $1 AND started_at >= $2 AND started_at < $3
          AND status = 'down') AS down_checks
"""


def say(label: str, text: str) -> None:
    """One progress line."""
    print(f"  [{label}] {text}", flush=True)


def service_ids(n: int) -> list[str]:
    """svc-0001 ... svc-NNNN."""
    return [f"svc-{i:04d}" for i in range(1, n + 1)]


def target_of(sid: str) -> float:
    """The SLA target the generator gave a service."""
    return SLA_TARGETS[int(sid[4:]) % len(SLA_TARGETS)]


async def check_agreement(
    session: aiohttp.ClientSession, pool: asyncpg.Pool, api: str, sids: list[str]
) -> list[str]:
    """Compare the api's answers with the raw queries for a few services; list differences."""
    today = datetime.now(UTC).date()
    start = datetime.combine(today - timedelta(days=29), datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    problems: list[str] = []
    for sid in sids:
        async with session.get(f"{api}/api/metrics/{sid}?days=30") as r:
            m = await r.json()
        async with session.get(f"{api}/api/sla/{sid}?days=30") as r:
            s = await r.json()
        raw = await pool.fetchrow(RAW_METRICS, sid, start, end)
        raw_sla = await pool.fetchrow(RAW_SLA, sid, start, end, target_of(sid))
        assert raw is not None and raw_sla is not None
        checks = {
            "totalRequests": (m["totalRequests"], raw["total"]),
            "successfulRequests": (m["successfulRequests"], raw["successful"]),
            "degradedChecks": (m["degradedChecks"], raw["degraded"]),
            "errorsByType": (
                {k: v for k, v in m["errorsByType"].items() if v},
                json.loads(raw["errors"]) if raw["errors"] else {},
            ),
            "breaches": (s["breaches"], raw_sla["breaches"]),
            "usedFailedChecks": (s["errorBudget"]["usedFailedChecks"], raw_sla["down_checks"]),
            "responseTimeSLA": (
                s["responseTimeSLA"],
                round(100 * raw_sla["within"] / raw_sla["total"], 3),
            ),
        }
        for key, (got, want) in checks.items():
            if got != want:
                problems.append(f"{sid} {key}: api {got} raw {want}")
        if abs(m["avgResponseTime"] - raw["avg_ms"]) > 0.051:
            problems.append(f"{sid} avg: api {m['avgResponseTime']} raw {raw['avg_ms']:.2f}")
        # Exact percentiles at the api's rank convention (numpy "lower": element
        # floor(q * (n - 1)) of the sorted times); the histogram promises 1 % of that.
        times = [
            float(r[0])
            for r in await pool.fetch(
                "SELECT response_time_ms FROM api_response_times WHERE service_id = $1 "
                "AND started_at >= $2 AND started_at < $3 AND status_code IS NOT NULL "
                "ORDER BY 1",
                sid,
                start,
                end,
            )
        ]
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)):
            got, exact = m[f"{name}ResponseTime"], times[int(q * (len(times) - 1))]
            if abs(got - exact) > 0.011 * exact + 0.05:  # + the api's rounding to 0.1 ms
                problems.append(f"{sid} {name}: api {got} raw {exact:.1f} (beyond 1 %)")
    return problems


LEVELS = (1, 4, 8, 16, 32)  # requests in flight
SEED_PATHS = ("/api/metrics/{}?days=30", "/api/sla/{}?days=30")
OTHER_PATHS = (
    "/api/uptime/{}?days=365",
    "/api/metrics/{}/trend?hours=24",
    "/api/metrics/{}/trend?resolution=1d&days=90",
    "/api/badges/{}/uptime.svg?days=30",
)


@dataclass
class SizeResult:
    """Everything measured at one data size."""

    label: str
    loads: list[Load]
    stats: list[Stat]


async def measure_size(
    *,
    label: str,
    dsn: str,
    api: ApiProcess,
    db_pid: int,
    sids: list[str],
    layout: RawLayout,
    seconds: float,
    raw_queries: int,
    wrk: str,
    script: Path,
) -> SizeResult:
    """The api (over HTTP, wrk) and SQL (rollup and raw) measurements at the current size."""
    rng = random.Random(7)
    result = SizeResult(label, [], [])
    today = datetime.now(UTC).date()
    start = datetime.combine(today - timedelta(days=29), datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    async with (
        aiohttp.ClientSession() as session,
        asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool,
    ):
        await api.wait(session)
        if layout.kind != "none":
            problems = await check_agreement(session, pool, api.url, rng.sample(sids, 5))
            say(
                label,
                "api vs raw on 5 services: "
                + ("all figures agree" if not problems else f"{len(problems)} differences"),
            )
            for p in problems[:10]:
                print(f"    {p}")

        def load(path: str, concurrency: int, duration: float) -> Load:
            return run_wrk(
                wrk,
                url=api.url,
                path=path,
                services=len(sids),
                concurrency=concurrency,
                seconds=duration,
                script=script,
                api_pid=api.proc.pid,
                db_pid=db_pid,
            )

        for path in SEED_PATHS:
            await asyncio.to_thread(load, path, 8, 2)  # warm caches and prepared statements
            for concurrency in LEVELS:
                got = await asyncio.to_thread(load, path, concurrency, seconds)
                say(
                    label,
                    f"{path} x{concurrency}: p50 {got.p50_ms:.2f} p99 "
                    f"{got.p99_ms:.2f} ms, {got.rate:,.0f}/s, load {os.getloadavg()[0]:.1f}",
                )
                result.loads.append(got)
        for path in OTHER_PATHS:
            result.loads.append(await asyncio.to_thread(load, path, 1, max(2.0, seconds / 3)))

        async def scrape() -> None:
            async with session.get(api.url + "/metrics") as r:
                await r.read()

        name = f"/metrics ({len(sids)} services, uncached)"
        result.stats.append(await best_of(name, scrape, count=5))

        # The api's own reads for the same answers, without HTTP: SQL next to SQL.
        store = PostgresStore(dsn=dsn, role=None, max_size=2)
        try:
            first_day, last_day = start.date(), today

            async def rollup_metrics() -> None:  # as the endpoint reads it
                await store.service_window(rng.choice(sids), first_day, last_day, open_from=today)

            async def rollup_sla() -> None:
                await store.sla_inputs(rng.choice(sids), first_day, last_day)

            for name, read in (
                ("rollup SQL (api store): metrics days=30", rollup_metrics),
                ("rollup SQL (api store): sla days=30", rollup_sla),
            ):
                await measure("warm", read, count=50, concurrency=1)
                result.stats.append(await best_of(name, read, count=400))
        finally:
            await store.close()

        if layout.kind != "none":
            for name, sql, extra in (
                ("raw SQL: metrics days=30", RAW_METRICS, False),
                ("raw SQL: sla days=30", RAW_SLA, True),
            ):

                async def raw(sql: str = sql, extra: bool = extra) -> None:
                    sid = rng.choice(sids)
                    args: list[Any] = [sid, start, end]
                    if extra:
                        args.append(target_of(sid))
                    await pool.fetch(sql, *args)

                await raw()  # warm the cache once
                result.stats.append(await best_of(name, raw, count=raw_queries))
    return result


def print_tables(results: list[SizeResult], sizes: dict[str, str]) -> None:
    """The markdown tables of a run."""
    print()
    print(
        "| data | endpoint (wrk, random services) | in flight | requests | p50 ms | p99 ms | "
        "req/s | api CPU ms/req | PostgreSQL CPU ms/req | wrk CPU ms/req |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        for x in r.loads:
            print(
                f"| {sizes[r.label]} | `{x.name}` | {x.concurrency} | {x.requests:,} | "
                f"{x.p50_ms:.2f} | {x.p99_ms:.2f} | {x.rate:,.0f} | {x.api_cpu_ms:.2f} | "
                f"{x.db_cpu_ms:.2f} | {x.client_cpu_ms:.3f} |"
            )
    print()
    print("| data | SQL, one at a time | queries | p50 ms | p99 ms |")
    print("|---|---|---:|---:|---:|")
    for r in results:
        for st in r.stats:
            print(
                f"| {sizes[r.label]} | `{st.name}` | {len(st.latencies_ms)} | "
                f"{statistics.median(st.latencies_ms):.2f} | {st.pct(0.99):.2f} |"
            )
    print(f"(SQL: the best of {ROUNDS} rounds by median)")
    print()
    for r in results:
        raw = {st.name: statistics.median(st.latencies_ms) for st in r.stats}
        for x in r.loads:
            kind = "metrics" if "/metrics/{}?" in x.name else "sla" if "/sla/" in x.name else None
            raw_ms = raw.get(f"raw SQL: {kind} days=30") if kind else None
            if raw_ms and x.concurrency == 1:
                print(
                    f"{sizes[r.label]}: {x.name} over HTTP, p50 {x.p50_ms:.2f} ms / p99 "
                    f"{x.p99_ms:.2f} ms: the raw query's p50 ({raw_ms:,.0f} ms) is "
                    f"{raw_ms / x.p50_ms:,.0f}x / {raw_ms / x.p99_ms:,.0f}x slower"
                )
        for path in SEED_PATHS:
            levels = [lv for lv in r.loads if lv.name == path]
            ok = [lv.concurrency for lv in levels if lv.p99_ms <= 10]
            top = max((lv.rate for lv in levels), default=0)
            print(
                f"{sizes[r.label]}: {path}: p99 <= 10 ms at {ok or 'no'} in flight; "
                f"at most {top:,.0f} req/s"
            )


META = "bench-meta.json"


async def generate(args: argparse.Namespace, root: Path, dsn: str) -> None:
    """Migrations, catalog and every pass of data; writes the sizes to `META` as it goes."""
    conn = await asyncpg.connect(dsn)
    try:
        applied = await migrate(conn)
        print(f"  migrations applied: {applied}")
        sids = service_ids(args.services)
        today = datetime.now(UTC).date()
        first = today - timedelta(days=args.days - 1)
        layout = await prepare(
            conn,
            sids=sids,
            first=first,
            last=today,
            interval=args.interval,
            sla_targets={sid: target_of(sid) for sid in sids},
        )
        print(f"  raw layout: {layout.describe()}")
    finally:
        await conn.close()
    raw_total = 0
    for step in range(args.steps):
        label = f"size{step + 1}"
        async with asyncpg.create_pool(dsn, min_size=1, max_size=WORKERS) as pool:
            started = time.monotonic()
            raw_total += await generate_step(
                pool,
                layout=layout,
                sids=sids,
                first=first,
                last=today,
                interval=args.interval,
                offset=args.interval * step / args.steps,
                hourly_days=args.hourly_days,
                major_outage_below=95.0,
                progress=functools.partial(say, label),
            )
            counts = await pool.fetchrow(
                "SELECT (SELECT count(*) FROM api_call_logs) AS daily, "
                "(SELECT count(*) FROM api_call_logs_hourly) AS hourly, "
                "(SELECT count(*) FROM uptime_records) AS records, "
                "pg_database_size(current_database()) AS size"
            )
            assert counts is not None
            took = time.monotonic() - started
            say(
                label,
                f"{raw_total:,} raw results; rollups: {counts['daily']:,} daily, "
                f"{counts['hourly']:,} hourly, {counts['records']:,} day records; database "
                f"{counts['size'] / 1e9:.1f} GB; generated in {took:.0f} s",
            )
        meta = json.loads((root / META).read_text()) if (root / META).exists() else {}
        meta.update(
            services=args.services,
            days=args.days,
            interval=args.interval,
            sizes={**meta.get("sizes", {}), label: raw_total},
            generated_seconds={**meta.get("generated_seconds", {}), label: round(took)},
            day=str(today),
        )
        (root / META).write_text(json.dumps(meta))
        if not args.generate_only and step + 1 < args.steps and args.measure_every_size:
            await args.measure(label, raw_total)


async def main_async(args: argparse.Namespace) -> None:
    wrk = wrk_binary()
    if args.reuse:
        root = Path(args.reuse)
        if not (root / META).exists():
            raise SystemExit(f"bench-api: {root / META} missing: not a kept bench-api folder")
    else:
        root = Path(tempfile.mkdtemp(prefix="watch-bench-api-", dir=args.workdir))
    pg = EmbeddedPostgres(root / "postgres", fast_unsafe=True)
    api: ApiProcess | None = None
    script = root / "random_service.lua"
    script.write_text(WRK_SCRIPT)
    print(f"bench-api: data in {root}; wrk {wrk}; load average {os.getloadavg()[0]:.1f}")
    results: list[SizeResult] = []
    sizes: dict[str, str] = {}
    try:
        pg.start()
        assert pg.proc is not None
        dsn = pg.url("watch")

        async def measure_now(label: str, raw_total: int) -> None:
            nonlocal api
            sizes[label] = f"{raw_total / 1e6:.1f} M raw"
            if api is None:
                api = ApiProcess(dsn, root / "api.log", source=Path(args.api_source))
            conn = await asyncpg.connect(dsn)
            try:
                layout = await detect_layout(conn)
            finally:
                await conn.close()
            results.append(
                await measure_size(
                    label=label,
                    dsn=dsn,
                    api=api,
                    db_pid=pg.proc.pid,  # type: ignore[union-attr]
                    sids=service_ids(meta_services()),
                    layout=layout,
                    seconds=args.seconds,
                    raw_queries=args.raw_queries,
                    wrk=wrk,
                    script=script,
                )
            )

        def meta_services() -> int:
            return int(json.loads((root / META).read_text())["services"])

        args.measure = measure_now
        if not args.reuse:
            await generate(args, root, dsn)
        meta = json.loads((root / META).read_text())
        if meta["day"] != str(datetime.now(UTC).date()):
            print(f"  note: the data was generated on {meta['day']}; the last days have no data")
        if not args.generate_only:
            label = max(meta["sizes"])
            await measure_now(label, meta["sizes"][label])
            print_tables(results, sizes)
        print(
            f"\n{meta['services']:,} services over {meta['days']} days (daily rollups for all of "
            f"it), hourly rollups for the last {args.hourly_days} days; one check per "
            f"{meta['interval']:g} s per service per pass; generated in "
            f"{meta['generated_seconds']} s; load average now {os.getloadavg()[0]:.1f}."
        )
        print("command: " + " ".join([".venv/bin/python", "bench/bench_api.py", *sys.argv[1:]]))
    finally:
        if api is not None:
            api.stop()
        pg.stop()
        if not (args.keep or args.reuse or args.generate_only):
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument(
        "--interval",
        type=float,
        default=630,
        help="seconds between checks of one service in one pass (630: 50 M results a pass)",
    )
    parser.add_argument("--steps", type=int, default=2, help="data sizes (passes of raw data)")
    parser.add_argument("--hourly-days", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10, help="per wrk run")
    parser.add_argument("--raw-queries", type=int, default=5)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="100 services, 60 days, 2 passes of 864,000 results; 3 s runs",
    )
    parser.add_argument(
        "--measure-every-size",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure after each pass, not only the last",
    )
    parser.add_argument(
        "--api-source",
        default=str(REPO),
        help="run the api from this source tree (e.g. an export of the previous commit)",
    )
    parser.add_argument("--workdir", default=None, help="where the database goes (default /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the database folder")
    parser.add_argument(
        "--generate-only",
        action="store_true",
        help="generate, keep the folder, measure nothing (then use --reuse)",
    )
    parser.add_argument(
        "--reuse",
        default=None,
        metavar="DIR",
        help="measure a folder kept by --keep/--generate-only, no generation",
    )
    args = parser.parse_args()
    if args.reuse:
        args.reuse = os.path.abspath(args.reuse)
    if args.quick:
        args.services, args.days, args.interval, args.seconds = 100, 60, 600, 3
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
