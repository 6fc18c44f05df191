"""The real `avatar-server serve` command in a subprocess, on a loopback port, used as a
context manager (tests/server_process.py is the restartable one the fuzz tests use)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import EMPTY_MODELS_DIR, TEST_ENVIRONMENT, TEST_ROOT

HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 60.0
ROOT = Path(__file__).resolve().parents[1]
# Not the in-process tests' folder: a starting server removes the staging folders it finds
# in AVATARS_DIR, and could remove one that a test in this process is writing. Server
# processes run one at a time, so they share this one (the demo avatar is prepared once).
PROCESS_AVATARS_DIR = TEST_ROOT / "process-avatars"
CREATE_TIMEOUT_SECONDS = 60.0
"""The first session of a run prepares the demo avatar: seconds on a busy machine."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class ServerProcess:
    """`python -m server serve` with the test environment plus `environment`."""

    def __init__(self, environment: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        env = {
            **os.environ,
            **TEST_ENVIRONMENT,
            "AVATARS_DIR": str(PROCESS_AVATARS_DIR),
            "MODELS_DIR": str(EMPTY_MODELS_DIR),
            **(environment or {}),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--host", HOST, "--port", str(self.port),
             "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )

    def __enter__(self) -> ServerProcess:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited while starting:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the server did not start in time")

    def __exit__(self, *_: object) -> None:
        self.stop()

    def connect(self) -> socket.socket:
        return socket.create_connection((HOST, self.port), timeout=5)

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        if self.process.poll() is None or self.process.stdout is None:
            return ""
        return self.process.stdout.read()
