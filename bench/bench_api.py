"""Metrics API benchmark: answers from the rollups vs the same answers from the raw tables.

    .venv/bin/python bench/bench_api.py                       # 1,000 services, a year, 2 sizes
    .venv/bin/python bench/bench_api.py --services 100 --days 60 --interval 600   # quick

What it does, in one run:
1. starts an embedded PostgreSQL (deploy/local/embedded.py, fsync off) in a temporary folder
   and applies the migrations;
2. size 1: generates raw results for every service over `--days` days, one check per
   `--interval` seconds, with SQL generate_series into an unlogged stage table, copied into
   whatever raw layout the migrations created (read from the catalog at run time: the
   version-1 tables watch_server_logs + api_response_times, or the compact check_results),
   and the matching daily rollups (api_call_logs, uptime_records; for the whole period),
   hourly rollups (the last `--hourly-days`) and service_state, all computed from the same
   stage rows, so the rollups equal the raw data;
3. starts the api as a process (`python -m services.api`, its default read-only role) and
   measures GET /api/metrics/{id}?days=30 and /api/sla/{id}?days=30 with an aiohttp client,
   one request at a time and 32 at a time, random services; then the same answers computed
   by SQL over the raw tables (through the seed's names watch_server_logs /
   api_response_times), one at a time, and checks the two answers agree;
4. size 2: adds a second pass of raw results (shifted by half an interval, so twice the raw
   rows; the rollup row count stays the same) and measures again.

The api, the database and the client share the machine (and other work may run on it):
compare rows of the same run, not runs.
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

from bench.api_generate import RawLayout, generate_step, prepare  # noqa: E402
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

    def __init__(self, dsn: str, log: Path) -> None:
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
            cwd=REPO,
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


async def measure_size(
    *,
    label: str,
    dsn: str,
    api: ApiProcess,
    sids: list[str],
    layout: RawLayout,
    requests: int,
    raw_queries: int,
) -> list[tuple[str, Stat]]:
    """The api and raw measurements at the current data size."""
    rng = random.Random(7)
    out: list[tuple[str, Stat]] = []
    today = datetime.now(UTC).date()
    start = datetime.combine(today - timedelta(days=29), datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    connector = aiohttp.TCPConnector(limit=64)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool,
    ):
        await api.wait(session)
        if layout.kind != "none":
            problems = await check_agreement(session, pool, api.url, rng.sample(sids, 5))
            print(
                f"  [{label}] api vs raw on 5 services: "
                + ("all figures agree" if not problems else f"{len(problems)} differences")
            )
            for p in problems[:10]:
                print(f"    {p}")

        for path in ("/api/metrics/{}?days=30", "/api/sla/{}?days=30"):

            async def call(path: str = path) -> None:
                url = api.url + path.format(rng.choice(sids))
                async with session.get(url) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{url}: {r.status}")

            await measure("warm", call, count=200, concurrency=8)
            out.append((label, await best_of(path, call, count=max(200, requests // 10))))
            for concurrency in (8, 32):
                stat = await measure(path, call, count=requests, concurrency=concurrency)
                out.append((label, stat))

        for path, count in (
            ("/api/uptime/{}?days=365", 100),
            ("/api/metrics/{}/trend?hours=24", 100),
            ("/api/metrics/{}/trend?resolution=1d&days=90", 100),
            ("/api/badges/{}/uptime.svg?days=30", 100),
        ):

            async def call_info(path: str = path) -> None:
                async with session.get(api.url + path.format(rng.choice(sids))) as r:
                    await r.read()

            out.append((label, await best_of(path, call_info, count=count)))

        async def scrape() -> None:
            async with session.get(api.url + "/metrics") as r:
                await r.read()

        name = f"/metrics ({len(sids)} services, uncached)"
        out.append((label, await best_of(name, scrape, count=5)))

        # The api's own reads for the same answers, without HTTP: SQL next to SQL.
        store = PostgresStore(dsn=dsn, role=None, max_size=2)
        try:
            first_day, last_day = start.date(), today

            async def rollup_metrics() -> None:
                sid = rng.choice(sids)
                await store.get_service(sid)
                await store.window_totals([sid], first_day, last_day)

            async def rollup_sla() -> None:
                await rollup_metrics()
                await store.day_records(rng.choice(sids), first_day, last_day)

            for name, read in (
                ("rollup SQL (api store): metrics days=30", rollup_metrics),
                ("rollup SQL (api store): sla days=30", rollup_sla),
            ):
                await measure("warm", read, count=50, concurrency=1)
                out.append((label, await best_of(name, read, count=400)))
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
                out.append((label, await best_of(name, raw, count=raw_queries)))
    return out


def print_table(rows: list[tuple[str, Stat]], sizes: dict[str, str]) -> None:
    print()
    print("| data | what | concurrency | requests | p50 ms | p99 ms | req/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, s in rows:
        print(
            f"| {sizes[label]} | `{s.name}` | {s.concurrency} | {len(s.latencies_ms)} | "
            f"{statistics.median(s.latencies_ms):.2f} | {s.pct(0.99):.2f} | {s.rate:,.0f} |"
        )
    print(f"(concurrency 1: the best of {ROUNDS} rounds by median; 8 and 32: one round)")
    print()
    for label in sizes:
        by = {s.name + f"@{s.concurrency}": s for lab, s in rows if lab == label}
        for api_name, raw_name in (
            ("/api/metrics/{}?days=30@1", "raw SQL: metrics days=30@1"),
            ("/api/sla/{}?days=30@1", "raw SQL: sla days=30@1"),
            ("rollup SQL (api store): metrics days=30@1", "raw SQL: metrics days=30@1"),
            ("rollup SQL (api store): sla days=30@1", "raw SQL: sla days=30@1"),
        ):
            if api_name in by and raw_name in by:
                ratio = statistics.median(by[raw_name].latencies_ms) / statistics.median(
                    by[api_name].latencies_ms
                )
                print(
                    f"{sizes[label]}: {api_name.split('@')[0]} p50 is {ratio:,.0f}x faster "
                    "than the raw query (one at a time)"
                )


async def main_async(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="watch-bench-api-", dir=args.workdir))
    pg = EmbeddedPostgres(root / "postgres", fast_unsafe=True)
    api: ApiProcess | None = None
    print(f"bench-api: data in {root}")
    try:
        pg.start()
        dsn = pg.url("watch")
        conn = await asyncpg.connect(dsn)
        try:
            applied = await migrate(conn)
            print(f"  migrations applied: {applied}")
            sids = service_ids(args.services)
            today = datetime.now(UTC).date()
            first = today - timedelta(days=args.days - 1)
            layout = await prepare(
                conn, sids=sids, first=first, last=today, interval=args.interval,
                sla_targets={sid: target_of(sid) for sid in sids},
            )  # fmt: skip
            print(f"  raw layout: {layout.describe()}")
        finally:
            await conn.close()

        rows: list[tuple[str, Stat]] = []
        sizes: dict[str, str] = {}
        raw_total = 0
        for step in range(args.steps):
            label = f"size{step + 1}"
            conn = await asyncpg.connect(dsn)
            try:
                started = time.monotonic()
                added = await generate_step(
                    conn,
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
                raw_total += added
                counts = await conn.fetchrow(
                    "SELECT (SELECT count(*) FROM api_call_logs) AS daily, "
                    "(SELECT count(*) FROM api_call_logs_hourly) AS hourly, "
                    "(SELECT count(*) FROM uptime_records) AS records"
                )
                assert counts is not None
                size = await conn.fetchval("SELECT pg_database_size(current_database())")
                print(
                    f"  [{label}] {raw_total:,} raw results; rollups: {counts['daily']:,} daily,"
                    f" {counts['hourly']:,} hourly, {counts['records']:,} day records; "
                    f"database {size / 1e9:.1f} GB; "
                    f"generated in {time.monotonic() - started:.0f} s",
                    flush=True,
                )
            finally:
                await conn.close()
            sizes[label] = f"{raw_total / 1e6:.1f} M raw"
            if api is None:
                api = ApiProcess(dsn, root / "api.log")
            rows += await measure_size(
                label=label,
                dsn=dsn,
                api=api,
                sids=sids,
                layout=layout,
                requests=args.requests,
                raw_queries=args.raw_queries,
            )
        print_table(rows, sizes)
        print(
            f"\n{args.services:,} services over {args.days} days (daily rollups for all of it), "
            f"hourly rollups for the last {args.hourly_days} days; one check per "
            f"{args.interval} s per service per pass, {args.steps} passes."
        )
        print("command: " + " ".join([".venv/bin/python", "bench/bench_api.py", *sys.argv[1:]]))
    finally:
        if api is not None:
            api.stop()
        pg.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument(
        "--interval", type=float, default=3600, help="seconds between checks of one service"
    )
    parser.add_argument("--steps", type=int, default=2, help="data sizes (passes of raw data)")
    parser.add_argument("--hourly-days", type=int, default=30)
    parser.add_argument("--requests", type=int, default=4000, help="per endpoint at 32 at once")
    parser.add_argument("--raw-queries", type=int, default=20)
    parser.add_argument("--workdir", default=None, help="where the database goes (default /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the database folder")
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
