"""The HTTP target of the prober benchmark: nginx if we can have it, else aiohttp processes.

nginx comes from Debian's packages: when it is missing and we are root, `apt-get install -y
nginx-light` (after `apt-get update` if needed). It serves `200 ok` on every path, with
keep-alive and no access log, from a config in a temporary directory; it is started in its own
process group and stopped by that group's id.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type text/plain; return 200 "ok"; }}
    }}
}}
"""

AIOHTTP_SERVER = """
import sys
from aiohttp import web

async def ok(_):
    return web.Response(text="ok")

app = web.Application()
app.router.add_route("*", "/{tail:.*}", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), reuse_port=True,
            access_log=None, print=None, backlog=4096)
"""


@dataclass
class RunningTarget:
    """A started target: what it is, where, and how to stop it."""

    kind: str
    base_url: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(port: int, procs: list[subprocess.Popen[bytes]], what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"{what} exited at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


def nginx_binary() -> str | None:
    """nginx on PATH or in /usr/sbin; installed from Debian's packages when root and missing."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print("nginx missing: apt-get install -y nginx-light", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "nginx-light"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        subprocess.run(install, env=env, capture_output=True)
    return shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:" + os.environ.get("PATH", ""))


def start_target(root: Path) -> RunningTarget:
    """nginx when available, else two aiohttp server processes sharing the port."""
    root.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    binary = nginx_binary()
    if binary:
        conf = root / "nginx.conf"
        conf.write_text(NGINX_CONF.format(root=root, port=port))
        proc = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(root)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            _wait(port, [proc], "nginx")
            version = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr
            kind = version.strip().split("/")[-1]
            return RunningTarget(f"nginx {kind} (1 worker)", f"http://127.0.0.1:{port}", [proc])
        except RuntimeError:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            print("nginx did not start; falling back to aiohttp", flush=True)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", AIOHTTP_SERVER, str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(2)
    ]
    _wait(port, procs, "aiohttp target")
    return RunningTarget("aiohttp (2 processes, fallback)", f"http://127.0.0.1:{port}", procs)
