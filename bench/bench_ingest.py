"""Ingest benchmark: JetStream -> recorder/aggregator -> PostgreSQL, on one set of results.

    .venv/bin/python bench/bench_ingest.py            # 200,000 results, catch-up of 1,000,000
    .venv/bin/python bench/bench_ingest.py --results 50000 --lag-seconds 10 --backlog 200000
    .venv/bin/python bench/bench_ingest.py --rounds 3  # the throughput rows three times

Starts an embedded nats-server and PostgreSQL (deploy/local/embedded.py, fsync on, as
`make run`) in a temporary directory, fills WATCH_CHECKS with N one-endpoint results
(Nats-Msg-Id = checkId), then, one after the other on the same messages:
  bare client    nats-py pull fetch(1000) + ack of each message, nothing else: the ceiling
                 of nats-py's own pull API
  lean client    the recorder's client path alone: shared.jetstream_pull's PullLoop (4
                 workers, batch 1000) + ack_all, no decoding, no database
  recorder x1/x2 `python -m services.recorder` processes on a fresh durable consumer and
                 database; time from the first delivery until nothing is pending
  row by row     the seed's way: fetch, decode, INSERT each result in its own transaction
                 (schema 001), ack; on the first --row-results messages
  db only        the same rows without NATS: COPY into the compact schema (002) vs the
                 version-1 `unnest` insert into schema 001, 1,000 per batch; bytes per check
                 on disk (heap + indexes of both raw tables, after VACUUM) for both
  aggregator lag `python -m services.aggregator` while results arrive at a steady rate
                 (default 1,000/s, startedAt = publish time); lag = when the daily rollup
                 counted the k-th result minus its publish time (polled every 10 ms)
  catch-up       a backlog of --backlog results (default 1,000,000) published while nothing
                 consumes, then one recorder and one aggregator started: seconds until each
                 consumer has nothing pending, and the rows stored. About 4 of the run's
                 6-7 minutes on a shared 2-CPU machine.
For each throughput row the CPU used meanwhile by nats-server, PostgreSQL (all its processes)
and the consumer (the recorder processes, or this process for the client rows) is printed as
a share of one core and in microseconds per result; the load average before and after.
The machine may be shared: compare rows of the same run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402
import nats  # noqa: E402
from nats.aio.client import Client as NatsClient  # noqa: E402
from nats.aio.msg import Msg  # noqa: E402
from nats.js import JetStreamContext  # noqa: E402
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy  # noqa: E402

from bench import ingest_v1  # noqa: E402
from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres  # noqa: E402
from services.recorder.decode import decode_check  # noqa: E402
from services.recorder.partitions import PartitionKeeper  # noqa: E402
from services.recorder.storage import PgRawStore  # noqa: E402
from shared.db import create_pool, migrate  # noqa: E402
from shared.events import CheckCompleted, EndpointResult, check_subject  # noqa: E402
from shared.jetstream_pull import PullLoop, ack_all  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.streams import ensure_streams  # noqa: E402

STREAM = "WATCH_CHECKS"
KUMA_BYTES = 148  # Uptime Kuma, SQLite, per heartbeat
TICK = os.sysconf("SC_CLK_TCK")
SELF = 0  # "pid" of this process in a CpuWatch


def cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by a process and its children (running ones and reaped ones)."""
    if pid == SELF:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if int(entry) == pid:  # utime, stime, and the reaped children's cutime, cstime
            total += sum(int(x) for x in fields[11:15]) / TICK
        elif int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


@dataclass
class CpuWatch:
    """CPU used by nats-server, PostgreSQL and the consumer processes between two marks."""

    nats: int
    postgres: int
    consumers: list[int]
    start: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def sample(self) -> tuple[float, float, float]:
        return (
            cpu_seconds(self.nats),
            cpu_seconds(self.postgres),
            sum(cpu_seconds(p) for p in self.consumers),
        )

    def mark(self) -> None:
        self.start = self.sample()

    def used(self) -> tuple[float, float, float]:
        now = self.sample()
        return (now[0] - self.start[0], now[1] - self.start[1], now[2] - self.start[2])


@dataclass
class Row:
    """One throughput row: how many results in how many seconds, and the CPU it took."""

    label: str
    results: int
    seconds: float
    cpu: tuple[float, float, float]  # nats-server, PostgreSQL, consumer (CPU seconds)
    load: tuple[float, float]  # 1-minute load average before and after

    @property
    def rate(self) -> float:
        return self.results / self.seconds if self.seconds > 0 else float("inf")


def load1() -> float:
    return os.getloadavg()[0]


def make_check(i: int, started_at: datetime) -> CheckCompleted:
    """A one-endpoint result; every 50th failed, latencies spread like real ones."""
    failed = i % 50 == 0
    ms = 20.0 + (i * 7919 % 400) / 3.0
    return CheckCompleted(
        check_id=uuid.uuid4(),
        service_id=f"service-{i % 20:02d}",
        region="eu-west-1",
        prober_id="prober-7d9f8c6b5-xk2p9",
        started_at=started_at,
        scheduled_at=started_at,
        duration_ms=ms + 0.2,
        status="down" if failed else "up",
        endpoints=[
            EndpointResult(
                name="health",
                method="GET",
                url="https://api.example.com/health",
                status_code=503 if failed else 200,
                response_time_ms=ms,
                ok=not failed,
                error_type="http_status" if failed else None,
                error_message="HTTP 503" if failed else None,
                latency_threshold_ms=500.0,
            )
        ],
    )


def iter_checks(n: int) -> Iterator[CheckCompleted]:
    """n results over the last hour (today's partition only), made as they are consumed."""
    now = datetime.now(UTC)
    start = max(now - timedelta(hours=1), now.replace(hour=0, minute=0, second=1))
    step = (now - start) / max(n, 1)
    return (make_check(i, start + step * i) for i in range(n))


def make_checks(n: int) -> list[CheckCompleted]:
    """n results over the last hour (today's partition only)."""
    return list(iter_checks(n))


# --------------------------------------------------------------------------- NATS side
async def fill(nc: NatsClient, js: JetStreamContext, checks: Iterable[CheckCompleted]) -> int:
    """Publish the results (core publish, stored by the stream), wait until all are stored."""
    before = (await js.stream_info(STREAM)).state.messages
    count = 0
    for c in checks:
        await nc.publish(
            check_subject(c.service_id), c.to_wire(), headers={"Nats-Msg-Id": str(c.check_id)}
        )
        count += 1
        if count % 5000 == 0:
            await nc.flush()
            # Let the server store what came so far: a million unflushed results would
            # only queue up in memory.
            while (await js.stream_info(STREAM)).state.messages < before + count - 50_000:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    await nc.flush()
    want = before + count
    deadline = time.monotonic() + 120
    while (await js.stream_info(STREAM)).state.messages < want:
        if time.monotonic() > deadline:
            raise RuntimeError("JetStream did not store every published result")
        await asyncio.sleep(0.1)
    return count


async def fresh_consumer(js: JetStreamContext, name: str) -> None:
    """A durable consumer reading the stream from its start (as the services declare it)."""
    with contextlib.suppress(Exception):  # not there yet
        await js.delete_consumer(STREAM, name)
    await js.add_consumer(
        STREAM,
        ConsumerConfig(
            durable_name=name,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30.0,
            max_deliver=50,
            filter_subject="watch.check.>",
            max_ack_pending=8000,
        ),
    )


async def drained(
    js: JetStreamContext,
    name: str,
    limit: float = 1800,
    on_first: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """Wait until a consumer has nothing pending: (first delivery, done) monotonic times."""
    first: float | None = None
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        info = await js.consumer_info(STREAM, name)
        now = time.monotonic()
        if first is None and info.delivered.consumer_seq > 0:
            first = now
            if on_first is not None:
                on_first()
        if first is not None and info.num_pending == 0 and info.num_ack_pending == 0:
            return first, now
        await asyncio.sleep(0.05)
    raise RuntimeError(f"consumer {name} did not drain within {limit}s")


async def bare_client(js: JetStreamContext, n: int, cpu: CpuWatch) -> Row:
    """nats-py alone fetching and acking n messages."""
    await fresh_consumer(js, "bench-bare")
    sub = await js.pull_subscribe_bind("bench-bare", stream=STREAM)
    got = 0
    load = load1()
    cpu.mark()
    t0 = time.perf_counter()
    while got < n:
        for m in await sub.fetch(1000, timeout=5):
            await m.ack()
            got += 1
    elapsed = time.perf_counter() - t0
    used = cpu.used()
    await sub.unsubscribe()
    await js.delete_consumer(STREAM, "bench-bare")
    return Row("bare nats-py fetch+ack (ceiling)", got, elapsed, used, (load, load1()))


async def lean_client(nc: NatsClient, js: JetStreamContext, n: int, cpu: CpuWatch) -> Row:
    """The recorder's client path alone: the lean pull loop and batched acks, nothing else."""
    await fresh_consumer(js, "bench-lean")
    got = 0
    done = asyncio.Event()

    async def handle(msgs: Sequence[Msg]) -> None:
        nonlocal got
        await ack_all(msgs)
        got += len(msgs)
        if got >= n:
            done.set()

    pull = PullLoop(
        nc=nc, stream=STREAM, durable="bench-lean", handler=handle, batch=1000, workers=4
    )
    load = load1()
    cpu.mark()
    t0 = time.perf_counter()
    pull.start()
    await done.wait()
    elapsed = time.perf_counter() - t0
    used = cpu.used()
    await pull.stop()
    await js.delete_consumer(STREAM, "bench-lean")
    return Row(
        "lean pull loop + batched acks (recorder's client path)",
        got,
        elapsed,
        used,
        (load, load1()),
    )


async def row_by_row(js: JetStreamContext, dsn: str, n: int, cpu: CpuWatch) -> Row:
    """n messages consumed the seed's way (one INSERT transaction per result)."""
    conn = await asyncpg.connect(dsn)
    await ingest_v1.create_schema(conn, [datetime.now(UTC).date()])
    keeper = PartitionKeeper(retention_days=30)
    await fresh_consumer(js, "bench-rows")
    sub = await js.pull_subscribe_bind("bench-rows", stream=STREAM)
    got = 0
    load = load1()
    cpu.mark()
    t0 = time.perf_counter()
    while got < n:
        for m in await sub.fetch(min(100, n - got), timeout=5):
            check = decode_check(m.data, partitions=keeper)
            assert isinstance(check, CheckCompleted)
            await ingest_v1.store_one(conn, check)
            await m.ack()
            got += 1
    elapsed = time.perf_counter() - t0
    used = cpu.used()
    await sub.unsubscribe()
    await js.delete_consumer(STREAM, "bench-rows")
    await conn.close()
    return Row("row by row (seed: INSERT + commit per result)", got, elapsed, used, (load, load1()))


# --------------------------------------------------------------------------- processes
class Services:
    """Service processes of one phase, each in its own process group, stopped by PID."""

    def __init__(self, root: Path, nats_url: str, dsn: str) -> None:
        self.root, self.nats_url, self.dsn = root, nats_url, dsn
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str) -> None:
        env = os.environ | {
            "DATABASE_URL": self.dsn,
            "NATS_URL": self.nats_url,
            "OPS_PORT": "0",
            "LOG_LEVEL": "warning",
        }
        with open(self.root / f"{name}.log", "ab") as out:
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", f"services.{name}"],
                    cwd=REPO,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        self.procs = []


# --------------------------------------------------------------------------- PostgreSQL side
async def new_database(pg: EmbeddedPostgres, name: str, *, migrated: bool = True) -> str:
    conn = await asyncpg.connect(pg.url("postgres"))
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    dsn = pg.url(name)
    if migrated:
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        await conn.close()
    return dsn


async def scalar(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def bytes_on_disk(dsn: str, tables: Sequence[str]) -> int:
    """Heap + indexes (+ TOAST) of every partition of the tables, after VACUUM."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM")
        return int(
            await conn.fetchval(
                "SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) "
                "FROM pg_inherits i WHERE i.inhparent = ANY($1::regclass[])",
                list(tables),
            )
        )
    finally:
        await conn.close()


async def timed(fn: Callable[[], Awaitable[None]]) -> float:
    t0 = time.perf_counter()
    await fn()
    return time.perf_counter() - t0


async def db_only(
    pg: EmbeddedPostgres, checks: Sequence[CheckCompleted]
) -> tuple[float, int, float, int]:
    """(COPY seconds, compact bytes, unnest seconds, v1 bytes) for the same rows."""
    batches = [checks[i : i + 1000] for i in range(0, len(checks), 1000)]
    dsn = await new_database(pg, "bench_copy")
    pool = await create_pool(dsn, max_size=2)
    store = PgRawStore(pool=pool, partitions=PartitionKeeper(retention_days=30))

    async def copy_all() -> None:
        for b in batches:
            await store.store(checks=b)

    copy_s = await timed(copy_all)
    await pool.close()
    copy_bytes = await bytes_on_disk(dsn, ["check_results", "endpoint_results"])

    dsn1 = await new_database(pg, "bench_v1", migrated=False)
    conn = await asyncpg.connect(dsn1)
    await ingest_v1.create_schema(conn, sorted({c.started_at.date() for c in checks}))

    async def unnest_all() -> None:
        for b in batches:
            await ingest_v1.store_unnest(conn, b)

    unnest_s = await timed(unnest_all)
    await conn.close()
    v1_bytes = await bytes_on_disk(dsn1, ["watch_server_logs", "api_response_times"])
    return copy_s, copy_bytes, unnest_s, v1_bytes


# --------------------------------------------------------------------------- phases
async def recorder_run(
    root: Path, pg: EmbeddedPostgres, js: JetStreamContext, nats_url: str, procs: int, cpu: CpuWatch
) -> Row:
    """`procs` recorders: from the first delivery until nothing is pending, rows stored."""
    dsn = await new_database(pg, f"bench_rec{procs}_{uuid.uuid4().hex[:8]}")
    await fresh_consumer(js, "recorder")
    services = Services(root, nats_url, dsn)
    load = load1()
    try:
        for _ in range(procs):
            services.start("recorder")
        cpu.consumers = [p.pid for p in services.procs]
        first, done = await drained(js, "recorder", on_first=cpu.mark)
        used = cpu.used()
    finally:
        services.stop()
    rows = await scalar(dsn, "SELECT count(*) FROM check_results")
    label = (
        "recorder, 1 process (JetStream -> PostgreSQL)"
        if procs == 1
        else (f"recorder, {procs} processes")
    )
    return Row(label, rows, done - first, used, (load, load1()))


async def aggregator_lag(
    root: Path,
    pg: EmbeddedPostgres,
    nc: NatsClient,
    js: JetStreamContext,
    nats_url: str,
    rate: int,
    secs: float,
) -> list[float]:
    """Per-result lag (s) of the aggregator at a steady publish rate."""
    await js.purge_stream(STREAM)
    dsn = await new_database(pg, "bench_lag")
    await fresh_consumer(js, "aggregator")
    services = Services(root, nats_url, dsn)
    services.start("aggregator")
    conn = await asyncpg.connect(dsn)
    published: list[float] = []
    seen: list[tuple[float, int]] = []
    total = int(rate * secs)
    try:
        await asyncio.sleep(3)  # start-up is not lag

        async def publish() -> None:
            t0 = time.monotonic()
            tick = 0.01
            per_tick = max(1, int(rate * tick))
            i = 0
            while i < total:
                now = datetime.now(UTC)
                for _ in range(min(per_tick, total - i)):
                    c = make_check(i, now)
                    await nc.publish(
                        check_subject(c.service_id),
                        c.to_wire(),
                        headers={"Nats-Msg-Id": str(c.check_id)},
                    )
                    published.append(time.monotonic())
                    i += 1
                await nc.flush()
                next_at = t0 + tick * (i // per_tick)
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        async def poll() -> None:
            deadline = time.monotonic() + secs + 120
            while time.monotonic() < deadline:
                n = await conn.fetchval("SELECT coalesce(sum(total_checks), 0) FROM api_call_logs")
                seen.append((time.monotonic(), int(n)))
                if n >= total:
                    return
                await asyncio.sleep(0.01)

        await asyncio.gather(publish(), poll())
    finally:
        await conn.close()
        services.stop()
    lags = []
    j = 0
    for k, t_pub in enumerate(published):
        while j < len(seen) and seen[j][1] < k + 1:
            j += 1
        if j == len(seen):
            break
        lags.append(max(0.0, seen[j][0] - t_pub))
    return lags


async def catch_up(
    root: Path,
    pg: EmbeddedPostgres,
    nc: NatsClient,
    js: JetStreamContext,
    checks: Iterable[CheckCompleted],
    nats_url: str,
) -> tuple[dict[str, tuple[float, float]], int]:
    """Per consumer: (seconds from process start, seconds from first delivery) to drain;
    and the rows the recorder stored."""
    await js.purge_stream(STREAM)
    dsn = await new_database(pg, "bench_catchup")
    for name in ("recorder", "aggregator"):
        await fresh_consumer(js, name)
    await fill(nc, js, checks)
    services = Services(root, nats_url, dsn)
    out: dict[str, tuple[float, float]] = {}
    try:
        started = time.monotonic()
        services.start("recorder")
        services.start("aggregator")

        async def one(name: str) -> None:
            first, done = await drained(js, name)
            out[name] = (done - started, done - first)

        await asyncio.gather(one("recorder"), one("aggregator"))
    finally:
        services.stop()
    return out, await scalar(dsn, "SELECT count(*) FROM check_results")


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))]


async def main_async(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    pg = EmbeddedPostgres(root / "postgres")
    ns = EmbeddedNats(root / "nats")
    pg.start()
    ns.start()
    began = time.monotonic()
    load_at_start = os.getloadavg()
    try:
        assert ns.proc is not None and pg.proc is not None
        cpu = CpuWatch(nats=ns.proc.pid, postgres=pg.proc.pid, consumers=[SELF])
        nc = await nats.connect(ns.url)
        js = nc.jetstream()
        await ensure_streams(js, Settings(nats_url=ns.url))
        n = args.results
        print(f"generating {n:,} results ...", flush=True)
        checks = make_checks(n)
        await fill(nc, js, checks)
        rows: list[Row] = []
        for r in range(args.rounds):
            print(f"round {r + 1}: bare client, lean client, recorder x1, x2 ...", flush=True)
            cpu.consumers = [SELF]
            rows.append(await bare_client(js, n, cpu))
            rows.append(await lean_client(nc, js, n, cpu))
            rows.append(await recorder_run(root, pg, js, ns.url, 1, cpu))
            rows.append(await recorder_run(root, pg, js, ns.url, 2, cpu))
        m = min(n, args.row_results)
        print(f"row by row ({m:,}) ...", flush=True)
        cpu.consumers = [SELF]
        dsn_rows = await new_database(pg, "bench_rows", migrated=False)
        rows.append(await row_by_row(js, dsn_rows, m, cpu))
        print("db only ...", flush=True)
        copy_s, copy_bytes, unnest_s, v1_bytes = await db_only(pg, checks)
        print(f"aggregator lag at {args.lag_rate}/s for {args.lag_seconds}s ...", flush=True)
        lags = await aggregator_lag(root, pg, nc, js, ns.url, args.lag_rate, args.lag_seconds)
        backlog = args.backlog
        print(f"catch-up of {backlog:,} ...", flush=True)
        del checks
        caught, stored = await catch_up(root, pg, nc, js, iter_checks(backlog), ns.url)
        await nc.close()
    finally:
        ns.stop()
        pg.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    row_rate = next(r.rate for r in rows if r.label.startswith("row by row"))
    bare_rate = statistics.median(r.rate for r in rows if r.label.startswith("bare"))
    print()
    print(
        f"Ingest benchmark: {n:,} one-endpoint results, batch 1000, {os.cpu_count()} CPUs, "
        f"load average {load_at_start[0]:.2f} at start, {os.getloadavg()[0]:.2f} at the end, "
        f"{(time.monotonic() - began) / 60:.1f} min"
    )
    print()
    print(
        "| path | results | seconds | results/s | x row by row | x bare client "
        "| CPU % of a core: nats-server / PostgreSQL / consumer "
        "| CPU us per result: nats-server / PostgreSQL / consumer | load avg |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        share = "/".join(f"{c / row.seconds * 100:.0f}" for c in row.cpu)
        per = "/".join(f"{c / row.results * 1e6:.1f}" for c in row.cpu)
        print(
            f"| {row.label} | {row.results:,} | {row.seconds:.2f} | {row.rate:,.0f} "
            f"| {row.rate / row_rate:.1f} | {row.rate / bare_rate:.2f} | {share} | {per} "
            f"| {row.load[0]:.1f}-{row.load[1]:.1f} |"
        )
    for label, s in (
        ("db only: COPY -> compact tables (002)", copy_s),
        ("db only: unnest -> version-1 tables (001)", unnest_s),
    ):
        r = n / s
        print(
            f"| {label} | {n:,} | {s:.2f} | {r:,.0f} | {r / row_rate:.1f} "
            f"| {r / bare_rate:.2f} | | | |"
        )
    print()
    print("| figure | value | goal |")
    print("|---|---:|---:|")
    if lags:
        print(
            f"| aggregator lag p50 / p99 at {args.lag_rate:,}/s ({len(lags):,} results) "
            f"| {statistics.median(lags) * 1000:.0f} ms / {pct(lags, 0.99) * 1000:.0f} ms "
            "| p99 <= 1 s |"
        )
    for name, (from_start, from_first) in caught.items():
        print(
            f"| catch-up of {backlog:,} results, {name} "
            f"| {from_start:.1f} s ({backlog / from_first:,.0f}/s after start-up) | |"
        )
    print(f"| rows stored by the recorder after the catch-up | {stored:,} | {backlog:,} |")
    print(f"| bytes per stored check, compact schema (002) | {copy_bytes / n:.0f} B | <= 148 B |")
    print(f"| bytes per stored check, version-1 schema (001) | {v1_bytes / n:.0f} B | |")
    print(f"| Uptime Kuma (SQLite) per heartbeat, for reference | {KUMA_BYTES} B | |")
    print()
    print("command: .venv/bin/python bench/bench_ingest.py " + " ".join(sys.argv[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=int, default=200_000)
    parser.add_argument("--row-results", type=int, default=10_000)
    parser.add_argument("--lag-rate", type=int, default=1000)
    parser.add_argument("--lag-seconds", type=float, default=20.0)
    parser.add_argument("--backlog", type=int, default=1_000_000, help="catch-up size")
    parser.add_argument(
        "--rounds", type=int, default=1, help="times to repeat the client and recorder rows"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
