"""LOG_FORMAT=json: the real server process writes one JSON object per line, with the
session id as a field on lines about a session, uvicorn's lines included."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.avatars.demo import prepare_demo
from server.avatars.preparation import Preparer
from tests.conftest import TEST_ENVIRONMENT, make_settings
from tests.webrtc_client import ClientPeer

pytestmark = pytest.mark.webrtc

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def json_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`avatar-server serve` with LOG_FORMAT=json in a process of its own: (url, its stderr)."""
    settings = make_settings()
    # Prepared here, so that the server's log holds no lines from the face detector's
    # native code (which writes to stderr itself, in its own format).
    prepare_demo(Preparer.from_settings(settings))
    port = free_port()
    log = tmp_path_factory.mktemp("json-logs") / "stderr.log"
    environment = {
        **os.environ,
        **TEST_ENVIRONMENT,
        "LOG_FORMAT": "json",
        "AVATARS_DIR": str(settings.avatars_dir),
        "MODELS_DIR": str(settings.models_dir),
    }
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=environment, stdout=subprocess.DEVNULL, stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield url, log
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(STOP_TIMEOUT_SECONDS)


@pytest.fixture(scope="module")
def session_lines(json_server: tuple[str, Path]) -> tuple[str, list[dict]]:
    """A session created, connected by a real peer and deleted: (its id, every log line so far)."""
    url, log = json_server

    async def one_session() -> str:
        async with httpx.AsyncClient(base_url=url) as http:
            sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
            peer = ClientPeer(http, sid)
            try:
                await peer.connect()
            finally:
                await peer.close()
            assert (await http.delete(f"/webrtc/sessions/{sid}")).status_code == 200
            return sid

    sid = asyncio.run(one_session())
    time.sleep(0.5)  # let the server write its last lines
    return sid, [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def test_every_line_is_a_json_object_with_time_level_logger_and_message(
    session_lines: tuple[str, list[dict]],
) -> None:
    _, lines = session_lines
    assert len(lines) > 5
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
        assert line["level"] in ("debug", "info", "warning", "error", "critical")
        assert line["time"].endswith("+00:00")


def test_lines_about_a_session_carry_its_id_as_a_field(session_lines: tuple[str, list[dict]]) -> None:
    sid, lines = session_lines
    about = [line for line in lines if line.get("session_id") == sid]
    messages = " | ".join(line["message"] for line in about)
    assert f"session {sid} created" in messages
    assert "answered offer" in messages
    assert "connection connected" in messages
    assert f"session {sid} closed: deleted by the client" in messages
    # Lines that name the session in their text are the ones that carry the field.
    assert all(line.get("session_id") == sid for line in lines if f"session {sid}" in line["message"])


def test_uvicorns_lines_are_json_too(session_lines: tuple[str, list[dict]]) -> None:
    _, lines = session_lines
    loggers = {line["logger"] for line in lines}
    assert {"uvicorn.error", "uvicorn.access", "server.core"} <= loggers
    access = [line["message"] for line in lines if line["logger"] == "uvicorn.access"]
    assert any('"POST /webrtc/sessions/create HTTP/1.1" 200' in message for message in access)
