"""`avatar-server serve` in a process of its own, on a loopback port.

A server in the test's own process (tests/live_server.py) takes the test run down with it
when native code segfaults, and cannot show what the real command does with slow clients,
signals or a proxy in front. Here the test watches the process, reads how it ended and what
it logged, can restart it, and can run several at once (the nodes behind nginx). Use it as
a context manager, or `start()` and `close()` it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.conftest import EMPTY_MODELS_DIR, TEST_ENVIRONMENT, TEST_ROOT

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 0.1
# Not the in-process tests' folder: a starting server removes the staging folders it finds
# in AVATARS_DIR, and could remove one that a test in this process is writing. Server
# processes share this one (the demo avatar is prepared once).
PROCESS_AVATARS_DIR = TEST_ROOT / "process-avatars"
CREATE_TIMEOUT_SECONDS = 60.0
"""The first session of a run prepares the demo avatar: seconds on a busy machine."""


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def describe_exit(code: int) -> str:
    """`code` of `Popen.returncode` in words: 'killed by SIGSEGV', 'exited with 1'."""
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with {code}"


class ServerProcess:
    """The server on loopback in a child process, configured by environment variables
    (the test environment plus `environment`); a fresh port at each start."""

    def __init__(self, environment: dict[str, str] | None = None) -> None:
        self.environment = {
            **TEST_ENVIRONMENT,
            "AVATARS_DIR": str(PROCESS_AVATARS_DIR),
            "MODELS_DIR": str(EMPTY_MODELS_DIR),
            "RENDERS_DIR": tempfile.mkdtemp(dir=TEST_ROOT, prefix="renders-"),
            "LOG_LEVEL": "warning",
            "PYTHONFAULTHANDLER": "1",  # a native crash prints the Python stack to the log
            **(environment or {}),
        }
        self.port = 0
        self.url = ""
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="avatar-server-", suffix=".log", delete=False)
        self._log_offset = 0

    def __enter__(self) -> ServerProcess:
        if not self.alive():
            self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The running (or last) process; only after `start()`."""
        if self._process is None:
            raise RuntimeError("the server process was not started")
        return self._process

    def start(self) -> ServerProcess:
        """Start the server and wait until it answers /health."""
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self._process = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--host", LOOPBACK, "--port", str(self.port)],
            cwd=ROOT,
            env={**os.environ, **self.environment},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.starts += 1
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if not self.alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start:\n{self.new_log()}")
            time.sleep(POLL_SECONDS)

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def exit_description(self) -> str | None:
        """How the process ended, or None while it runs."""
        if self._process is None or self._process.poll() is None:
            return None
        return describe_exit(self._process.returncode)

    def connect(self) -> socket.socket:
        """A raw TCP connection to the server, for clients that misbehave."""
        return socket.create_connection((LOOPBACK, self.port), timeout=5)

    def terminate(self) -> None:
        """SIGTERM, as a process manager stops it; `process.wait()` to see it exit."""
        self.process.send_signal(signal.SIGTERM)

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_SECONDS; the process is kept for
        `exit_description()`."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def new_log(self) -> str:
        """What the server wrote since the last call."""
        self._log.flush()
        with open(self._log.name, "rb") as log:
            log.seek(self._log_offset)
            text = log.read()
        self._log_offset += len(text)
        return text.decode(errors="replace")

    def output(self) -> str:
        """Everything the server wrote, over all its starts."""
        self._log.flush()
        return Path(self._log.name).read_bytes().decode(errors="replace")

    def close(self) -> None:
        self.stop()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)
