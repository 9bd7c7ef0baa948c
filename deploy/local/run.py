"""`make run`: everything on one machine.

Starts an embedded NATS (JetStream) and PostgreSQL under `.data/` unless `NATS_URL` /
`DATABASE_URL` point elsewhere, applies the migrations, then runs the four services as
separate processes. Their combined log goes to the terminal and to `watch-server.log`.
Ctrl-C (or SIGTERM) stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path

import asyncpg

from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres
from deploy.local.supervisor import SERVICES, LogSink, ServiceProcess, service_env, stop_all
from shared.db import SchemaError, migrate

CONFIG_ERROR_EXIT = 2  # a service exits with 2 on bad configuration: restarting won't help


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _say(sink: LogSink, level: str, event: str, **fields: object) -> None:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000Z"
    kv = " ".join(f"{k}={v}" for k, v in fields.items())
    sink.write(f"{level} {ts} run {event} {kv}".rstrip())


async def _migrate(url: str, attempts: int = 30) -> list[int]:
    for attempt in range(attempts):
        try:
            conn = await asyncpg.connect(url, timeout=5)
        except (OSError, asyncpg.PostgresError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(1)
            continue
        try:
            return await migrate(conn)
        finally:
            await conn.close()
    return []


def _wait_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__)
    parser.add_argument("--data-dir", default=os.environ.get("WATCH_DATA_DIR", ".data"))
    parser.add_argument("--log-file", default="watch-server.log")
    parser.add_argument("--migrate-only", action="store_true", help="apply migrations and exit")
    args = parser.parse_args(argv)

    data = Path(args.data_dir).absolute()
    sink = LogSink(Path(args.log_file), echo=sys.stdout)
    env = dict(os.environ)
    pg: EmbeddedPostgres | None = None
    nats_server: EmbeddedNats | None = None
    processes: list[ServiceProcess] = []
    stopping = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    try:
        if not env.get("DATABASE_URL"):
            pg = EmbeddedPostgres(data / "postgres", port=5432 if _port_free(5432) else None)
            pg.start()
            env["DATABASE_URL"] = pg.url()
            _say(sink, "INFO", "postgres.started", url=env["DATABASE_URL"], data=pg.data_dir)
        if not args.migrate_only and not env.get("NATS_URL"):
            nats_server = EmbeddedNats(data / "nats", port=4222 if _port_free(4222) else None)
            nats_server.start()
            env["NATS_URL"] = nats_server.url
            _say(sink, "INFO", "nats.started", url=nats_server.url, data=nats_server.data_dir)

        try:
            applied = asyncio.run(_migrate(env["DATABASE_URL"]))
        except (SchemaError, OSError, asyncpg.PostgresError) as exc:
            _say(sink, "ERROR", "migrate.failed", error=f'"{exc}"')
            return 1
        _say(sink, "INFO", "migrate.done", applied=applied or "none")
        if args.migrate_only:
            return 0

        for name in SERVICES:
            p = ServiceProcess(name, env=service_env(env), sink=sink)
            p.start()
            processes.append(p)
            _say(sink, "INFO", "service.started", service=name, pid=p.pid)

        api = f"http://127.0.0.1:{env.get('API_PORT', '3008')}"
        if _wait_http(f"{api}/health", 60):
            _say(sink, "INFO", "ready", api=api, hint=f"curl {api}/api/metrics")
        restarts: dict[str, float] = {}
        while not stopping:
            time.sleep(0.5)
            for p in processes:
                code = p.poll()
                if code is None or stopping:
                    continue
                if code == CONFIG_ERROR_EXIT:
                    _say(
                        sink,
                        "ERROR",
                        "service.config_error",
                        service=p.name,
                        hint="fix the configuration named above",
                    )
                    return CONFIG_ERROR_EXIT
                # A crashed service comes back after a short pause, as Kubernetes would do.
                if time.monotonic() - restarts.get(p.name, 0) > 5:
                    _say(
                        sink, "ERROR", "service.exited", service=p.name, code=code, action="restart"
                    )
                    restarts[p.name] = time.monotonic()
                    p.start()
        return 0
    finally:
        stop_all(
            processes,
            lambda p, code: _say(sink, "INFO", "service.stopped", service=p.name, code=code),
        )
        if nats_server:
            nats_server.stop()
            _say(sink, "INFO", "nats.stopped")
        if pg:
            pg.stop()
            _say(sink, "INFO", "postgres.stopped")
        sink.close()


if __name__ == "__main__":
    sys.exit(main())
