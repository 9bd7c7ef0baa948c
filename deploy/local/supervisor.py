"""Run Watch Server's services as separate child processes (for `make run` and e2e tests).

Each service is started as `python -m services.<name>` in its own process group, its output
prefixed and copied to one combined log; stopping sends SIGTERM, then SIGKILL after a grace
period, always by process group id.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

SERVICES = ("recorder", "aggregator", "prober", "api")


class LogSink:
    """A thread-safe line sink writing to a file and, optionally, to a stream."""

    def __init__(self, path: Path | None, echo: IO[str] | None = None) -> None:
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8", buffering=1) if path else None  # noqa: SIM115
        self._echo = echo
        self.lines: list[str] = []
        self.keep_lines = False

    def write(self, line: str) -> None:
        with self._lock:
            if self._file:
                self._file.write(line + "\n")
            if self._echo:
                self._echo.write(line + "\n")
                self._echo.flush()
            if self.keep_lines:
                self.lines.append(line)

    def close(self) -> None:
        with self._lock:
            if self._file:
                self._file.close()
                self._file = None


class ServiceProcess:
    """One service as a child process in its own process group."""

    def __init__(
        self, name: str, *, env: Mapping[str, str], sink: LogSink, cwd: Path | None = None
    ) -> None:
        self.name = name
        self.env = dict(env)
        self.sink = sink
        self.cwd = cwd
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        if self.proc is not None:  # a restart: release the previous run's pipe
            self._close_pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"],
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _pump(self, stream: IO[str] | None) -> None:
        if stream is None:
            return
        for line in stream:
            line = line.rstrip("\n")
            # Our services log "LEVEL time service ..."; anything else (a traceback) is tagged.
            if line.split(" ", 1)[0] not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
                line = (
                    f"ERROR - {self.name} output {line}"
                    if "Error" in line or "Traceback" in line
                    else f"INFO - {self.name} output {line}"
                )
            self.sink.write(line)

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close_pipe()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is None:
            return
        self.signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self._reader:
            self._reader.join(5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


def service_env(base: Mapping[str, str], **overrides: str) -> dict[str, str]:
    """The environment for a service process: the caller's plus overrides, unbuffered."""
    env = dict(base)
    env.update(overrides)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def stop_all(
    processes: list[ServiceProcess],
    on_stop: Callable[[ServiceProcess, int | None], None] | None = None,
) -> None:
    """Stop services in reverse start order (the prober first, the writers last)."""
    for p in reversed(processes):
        code = p.stop()
        if on_stop:
            on_stop(p, code)
