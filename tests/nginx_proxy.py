"""Debian's nginx running deploy/nginx's config in front of test nodes, on loopback.

The shipped files are used as they are, but for the addresses: the example nodes of
avatar-nodes.conf become the test's, and the listen line a free loopback port. The test's
own nginx.conf adds an access log that names the node (upstream) of every request.
"""

from __future__ import annotations

import asyncio

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.server_process import LOOPBACK, ROOT, free_port

NGINX = Path("/usr/sbin/nginx")  # scripts/nginx.sh installs it
NGINX_JS_MODULE = Path("/usr/lib/nginx/modules/ngx_http_js_module.so")
CONFIG_DIR = ROOT / "deploy" / "nginx"
# The example nodes in avatar-nodes.conf, in the order of its NODE_IDs (a, b).
EXAMPLE_NODE_ADDRESSES = ("10.0.0.11:8000", "10.0.0.12:8000")
EXAMPLE_LISTEN = "listen 80;"
START_TIMEOUT_SECONDS = 10.0
ACCESS_LOG_FORMAT = "$request_method|$request_uri|$upstream_addr|$upstream_status|$status"


LOG_SETTLE_SECONDS = 0.1
"""How long the access log must stay unchanged to be taken as complete."""

def why_nginx_cannot_run() -> str | None:
    if not NGINX.exists() or not NGINX_JS_MODULE.exists():
        return f"no {NGINX} with njs: install Debian's nginx and libnginx-mod-http-js (./scripts/test does)"
    return None


@dataclass(frozen=True)
class Routed:
    """One line of the access log: a request and the node addresses that were asked."""

    method: str
    uri: str
    upstreams: tuple[str, ...]
    """`$upstream_addr`: every node asked, in order ('-' when nginx answered itself)."""
    upstream_statuses: tuple[str, ...]
    status: int


class NginxProxy:
    """nginx with deploy/nginx's config, in front of `nodes` (addresses, as avatar-nodes.conf's
    example nodes a and b)."""

    def __init__(self, node_addresses: tuple[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        # nginx's workers run as nobody when it runs as root: they need to reach its temp files.
        self.prefix = Path(tempfile.mkdtemp(prefix="nginx-"))
        self.prefix.chmod(0o755)
        self.access_log = self.prefix / "access.log"
        conf_d = self.prefix / "conf.d"
        conf_d.mkdir()
        nodes = (CONFIG_DIR / "avatar-nodes.conf").read_text()
        for example, address in zip(EXAMPLE_NODE_ADDRESSES, node_addresses, strict=True):
            assert example in nodes, f"{example} is no longer an example node of avatar-nodes.conf"
            nodes = nodes.replace(example, address)
        (conf_d / "avatar-nodes.conf").write_text(nodes)
        server = (CONFIG_DIR / "avatar-server.conf").read_text()
        assert server.count(EXAMPLE_LISTEN) == 1, f"avatar-server.conf no longer has {EXAMPLE_LISTEN!r}"
        (conf_d / "avatar-server.conf").write_text(
            server.replace(EXAMPLE_LISTEN, f"listen {LOOPBACK}:{self.port};")
        )
        shutil.copy(CONFIG_DIR / "avatar_node.js", conf_d / "avatar_node.js")
        (self.prefix / "nginx.conf").write_text(
            f"load_module {NGINX_JS_MODULE};\n"
            "daemon off;\n"
            "worker_processes 1;  # one round-robin state: the order of nodes tried is known\n"
            "pid nginx.pid;\n"
            "error_log error.log notice;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            f"    log_format routed '{ACCESS_LOG_FORMAT}';\n"
            f"    access_log {self.access_log} routed;\n"
            "    include conf.d/avatar-*.conf;\n"
            "}\n"
        )
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> NginxProxy:
        self._process = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=self.prefix
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nginx exited while starting:\n{self.error_log()}")
            try:
                httpx.get(f"{self.url}/health", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not start:\n{self.error_log()}")

    async def settled(self) -> list[Routed]:
        """`routed()` once the log has stopped growing: nginx writes a request's line after
        its answer is sent, so a client can read the answer before the line is there."""
        count = -1
        while True:
            entries = self.routed()
            if len(entries) == count:
                return entries
            count = len(entries)
            await asyncio.sleep(LOG_SETTLE_SECONDS)

    def routed(self) -> list[Routed]:
        """Every request nginx has finished, oldest first (see `settled`)."""
        lines = self.access_log.read_text().splitlines() if self.access_log.exists() else []
        entries = []
        for line in lines:
            method, uri, upstreams, statuses, status = line.split("|")
            entries.append(Routed(
                method, uri, tuple(upstreams.split(", ")), tuple(statuses.split(", ")), int(status)
            ))
        return entries

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.prefix, ignore_errors=True)

    def _command(self, *arguments: str) -> list[str]:
        return [str(NGINX), "-p", f"{self.prefix}{os.sep}", "-c", str(self.prefix / "nginx.conf"), *arguments]
