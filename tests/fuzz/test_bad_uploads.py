"""Hundreds of bad uploads, one after another, to a session that must keep speaking.

The server runs in a process of its own, with a real aiortc client connected to one of
its sessions. Each generated case (tests/fuzz/bad_uploads.py) must be answered with a 4xx
and a JSON `detail` (or 200 when it really is audio), never a 5xx or a dropped connection;
after it, the server process is still alive and the session still speaks a short valid
utterance from start to end. A case that kills the server is recorded and the server
started again, so that one defect does not hide the others; the test fails on any.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.fuzz.bad_uploads import (
    DAMAGED_WEBM,
    MANY_CHANNELS,
    NON_FINITE_FLOAT,
    UNKNOWN_WAV_FORMAT,
    Expect,
    UploadCase,
    battery,
    encode,
    file_upload,
)
from tests.fuzz.listening_client import CONNECT_TIMEOUT_SECONDS, CREATE_TIMEOUT_SECONDS
from tests.fuzz.tally import Tally, note
from tests.server_process import ServerProcess
from tests.webrtc_client import ClientPeer

pytestmark = [pytest.mark.fuzz, pytest.mark.webrtc]

SEED = 8
MAX_UPLOAD_BYTES = 2_000_000
MAX_AUDIO_SECONDS = 3.0
PROBE_SECONDS = 0.2
REQUEST_TIMEOUT_SECONDS = 30.0
SPEECH_TIMEOUT_SECONDS = 10.0

SERVER_ENVIRONMENT = {
    "MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
    "MAX_AUDIO_SECONDS": str(MAX_AUDIO_SECONDS),
    # Every case comes from one address, far faster than a client would send: the
    # per-client rate limits (tested on their own) would answer most of them 429.
    "RATE_LIMIT_CREATE_PER_MINUTE": "0",
    "RATE_LIMIT_UPLOAD_PER_MINUTE": "0",
}

# What the server log says when a decode defect of issue 8 is hit: FFmpeg opened a stream
# whose codec it cannot decode (an unknown WAV format tag or bit depth, a damaged WebM
# codec id), and the decoder read its rate anyway.
STREAM_WITHOUT_RATE = "'AudioStream' object has no attribute 'rate'"
DEATH_SECONDS = 3.0
"""How long a server that dropped a connection gets to be seen dead."""

BATTERY = Tally("bad uploads")


@dataclass
class Failure:
    case: UploadCase
    what: str
    log: str

    def known_issue(self) -> str:
        """Which known decode defect explains this failure, if one does."""
        issue = self.case.known_issue
        if "died" in self.what:
            return MANY_CHANNELS if issue == MANY_CHANNELS else "not a known decode defect"
        if STREAM_WITHOUT_RATE in self.log:
            return issue if issue in (UNKNOWN_WAV_FORMAT, DAMAGED_WEBM) else STREAM_WITHOUT_RATE
        if self.what.startswith("accepted") and issue == NON_FINITE_FLOAT:
            return issue
        return "not a known decode defect"

    def line(self) -> str:
        return f"{self.case.name} [{self.case.category}]: {self.what} ({self.known_issue()})"


class SpeakingSession:
    """The server process, one session of it, and a real client peer connected to it."""

    def __init__(self) -> None:
        self.server = ServerProcess(SERVER_ENVIRONMENT)
        self.http: httpx.AsyncClient | None = None
        self.peer: ClientPeer | None = None
        self.session_id = ""

    async def start(self) -> None:
        if not self.server.alive():
            self.server.start()
        self.http = httpx.AsyncClient(base_url=self.server.url, timeout=REQUEST_TIMEOUT_SECONDS)
        created = await self.http.post("/webrtc/sessions/create", timeout=CREATE_TIMEOUT_SECONDS)
        created.raise_for_status()
        self.session_id = created.json()["session_id"]
        self.peer = ClientPeer(self.http, self.session_id)
        await self.peer.connect(CONNECT_TIMEOUT_SECONDS)
        # Events are sent on the channel only once it is open (the session then sends its
        # state): before that, a probe's speaking_started would be missed.
        deadline = time.monotonic() + CONNECT_TIMEOUT_SECONDS
        while not self.peer.received.events and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self.peer is not None:
            await self.peer.close()
        if self.http is not None:
            await self.http.aclose()
        self.peer = self.http = None

    async def restart(self) -> None:
        """A fresh session (and server process, when it died) after a failure."""
        await self.close()
        await self.start()

    async def exit_within(self, seconds: float) -> str | None:
        """How the server process ended, if it does within `seconds`."""
        deadline = time.monotonic() + seconds
        while self.server.alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.server.exit_description()

    async def upload(self, request: dict[str, Any]) -> httpx.Response:
        assert self.http is not None
        return await self.http.post(f"/webrtc/sessions/{self.session_id}/stream", **request)

    async def spoken(self, utterance_id: str, timeout: float) -> bool:
        """Whether the utterance started and ended playing on the client within `timeout`."""
        assert self.peer is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kinds = {
                event["type"]
                for event in self.peer.received.events
                if event.get("utterance_id") == utterance_id
            }
            if {"speaking_started", "speaking_ended"} <= kinds:
                return True
            if "utterance_cancelled" in kinds or not self.server.alive():
                return False
            await asyncio.sleep(0.02)
        return False


@pytest.fixture
async def speaking_session() -> AsyncIterator[SpeakingSession]:
    session = SpeakingSession()
    await session.start()
    try:
        yield session
    finally:
        await session.close()
        session.server.close()


def judge(case: UploadCase, response: httpx.Response) -> str | None:
    """What is wrong with the answer to `case`, or None."""
    status = response.status_code
    if status >= 500:
        return f"{status}: {response.text[:200]}"
    try:
        body = response.json()
    except ValueError:
        return f"{status} without a JSON body: {response.text[:100]!r}"
    if status == 200:
        return "accepted (200) a bad input" if case.expect is Expect.REFUSED else None
    if not 400 <= status < 500:
        return f"unexpected status {status}"
    if not isinstance(body, dict) or not isinstance(body.get("detail"), str) or not body["detail"]:
        return f"{status} without a `detail` sentence: {response.text[:100]}"
    if case.expect is Expect.ACCEPTED:
        return f"refused valid audio: {status} {body['detail']}"
    return None


async def run_case(session: SpeakingSession, case: UploadCase) -> tuple[str, str | None]:
    """(outcome for the tally, failure or None) of one case and the check after it."""
    session.server.new_log()  # skip what earlier cases logged
    try:
        response = await session.upload(case.request)
    except httpx.TransportError as error:
        death = await session.exit_within(DEATH_SECONDS)
        if death is not None:
            return "server died", f"the server died ({death}) during the request"
        return "connection dropped", f"no answer: {type(error).__name__}: {error}"
    failure = judge(case, response)
    outcome = str(response.status_code) if failure is None else _failure_kind(response)
    if failure is None and response.status_code == 200:
        accepted = response.json()
        waited = accepted["duration_seconds"] + SPEECH_TIMEOUT_SECONDS
        if not await session.spoken(accepted["utterance_id"], waited):
            failure, outcome = "an accepted upload was not spoken to the end", "not spoken"
    death = session.server.exit_description()
    if death is not None:
        return "server died", failure or f"the server died ({death}) after answering"
    if failure is not None:
        return outcome, failure
    probe = await session.upload(file_upload(PROBE, "probe.wav", "audio/wav"))
    if probe.status_code != 200:
        return "session broken", f"then a valid utterance got {probe.status_code}: {probe.text[:200]}"
    if not await session.spoken(probe.json()["utterance_id"], PROBE_SECONDS + SPEECH_TIMEOUT_SECONDS):
        return "session broken", "then a valid utterance was not spoken to the end"
    return outcome, None


def _failure_kind(response: httpx.Response) -> str:
    if response.status_code >= 500:
        return str(response.status_code)
    if response.status_code == 200:
        return "200 for bad input"
    return f"{response.status_code} (wrong)"


PROBE = encode("wav", PROBE_SECONDS)


async def test_no_bad_upload_gets_a_server_error_or_stops_the_session_speaking(
    speaking_session: SpeakingSession,
) -> None:
    cases = battery(SEED, MAX_UPLOAD_BYTES, MAX_AUDIO_SECONDS)
    assert len(cases) >= 300
    started = time.monotonic()
    failures: list[Failure] = []
    for case in cases:
        outcome, failure = await run_case(speaking_session, case)
        BATTERY.record(case.category, outcome if failure is None else f"FAILED {outcome}")
        if failure is not None:
            log = speaking_session.server.new_log()
            failures.append(Failure(case, failure, log))
            await speaking_session.restart()
    elapsed = time.monotonic() - started
    note(f"bad uploads: {len(cases)} cases in {elapsed:.0f} s, {len(failures)} failed, "
         f"{speaking_session.server.starts - 1} server restarts")
    for failure in failures:
        note(f"  {failure.line()}")
    by_issue: dict[str, int] = {}
    for failure in failures:
        by_issue[failure.known_issue()] = by_issue.get(failure.known_issue(), 0) + 1
    for issue, count in sorted(by_issue.items()):
        note(f"  {count} x {issue}")
    assert not failures, "\n".join(failure.line() for failure in failures)
