"""`GET /webrtc/sessions/{id}/events`: server-sent events read by httpx from a live server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.audio_files import encode, speech_like
from tests.conftest import make_settings
from tests.live_server import LiveServer
from tests.sse_client import EventStream, read_events
from tests.webrtc_client import ClientPeer

pytestmark = pytest.mark.webrtc

HEARTBEAT_SECONDS = 0.3


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    server = LiveServer(make_settings(events_heartbeat_seconds=HEARTBEAT_SECONDS), host="127.0.0.1")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def http(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as client:
        yield client


def voice(seconds: float) -> bytes:
    return encode(speech_like(seconds, bursts=[(0.0, seconds)]), "wav")


async def listen(http: httpx.AsyncClient, sid: str) -> tuple[EventStream, asyncio.Task[None]]:
    stream = EventStream()
    task = asyncio.ensure_future(read_events(http, sid, stream))
    await stream.wait_for("state", timeout=5)
    return stream, task


async def test_a_listener_sees_queued_started_ended_then_an_interruption_with_played_seconds(
    http: httpx.AsyncClient,
) -> None:
    sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
    stream, task = await listen(http, sid)
    other, other_task = await listen(http, sid)
    peer = ClientPeer(http, sid)
    try:
        assert stream.status == 200 and stream.content_type.startswith("text/event-stream")
        assert stream.events[0]["state"] == "waiting"
        await peer.connect()
        await stream.wait_for("state", timeout=5, state="idle")

        files = {"audio_file": ("speech.wav", voice(0.8), "audio/wav")}
        u1 = (await http.post(f"/webrtc/sessions/{sid}/stream", files=files)).json()["utterance_id"]
        await stream.wait_for("speaking_ended", timeout=5, utterance_id=u1)
        mine = [(e["type"], e.get("position")) for e in stream.events if e.get("utterance_id") == u1]
        assert mine == [("utterance_queued", 0), ("speaking_started", None), ("speaking_ended", None)]
        assert stream.of_type("speaking_ended")[0]["played_seconds"] == pytest.approx(0.8, abs=0.001)

        files = {"audio_file": ("speech.wav", voice(3.0), "audio/wav")}
        u2 = (await http.post(f"/webrtc/sessions/{sid}/stream", files=files)).json()["utterance_id"]
        await stream.wait_for("speaking_started", timeout=5, utterance_id=u2)
        await asyncio.sleep(0.5)
        cut = (await http.post(f"/webrtc/sessions/{sid}/interrupt")).json()["interrupted"]
        interrupted = await stream.wait_for("utterance_interrupted", timeout=3, utterance_id=u2)
        assert interrupted["played_seconds"] == cut["played_seconds"]
        assert 0.4 <= interrupted["played_seconds"] <= 1.2
        assert interrupted["duration_seconds"] == pytest.approx(3.0, abs=0.001)
        await stream.wait_for("state", timeout=3, state="idle")
        await asyncio.sleep(0.1)
    finally:
        await peer.close()

    # The same events, with the same numbers, reach every listener and the data channel.
    numbered = [(e["_id"], e["_event"], e["type"]) for e in stream.events[1:]]
    assert all(int(i) == e["seq"] for (i, _, _), e in zip(numbered, stream.events[1:]))
    assert all(event == kind for _, event, kind in numbered)
    assert [e["seq"] for e in stream.events[1:]] == sorted(e["seq"] for e in stream.events[1:])
    assert [e["seq"] for e in other.events[1:]] == [e["seq"] for e in stream.events[1:]]
    over_channel = {e["seq"]: e["type"] for e in peer.received.events if e.get("seq")}
    assert over_channel[stream.of_type("utterance_interrupted")[0]["seq"]] == "utterance_interrupted"

    # Deleting the session ends every stream, after its last events.
    await http.delete(f"/webrtc/sessions/{sid}")
    await asyncio.wait_for(asyncio.gather(task, other_task), timeout=5)
    assert stream.ended and stream.events[-1]["type"] == "session_ended"


async def test_an_idle_stream_sends_heartbeats(http: httpx.AsyncClient) -> None:
    sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
    stream, task = await listen(http, sid)
    try:
        await asyncio.sleep(HEARTBEAT_SECONDS * 3.5)
        assert len(stream.comments) >= 2
    finally:
        await http.delete(f"/webrtc/sessions/{sid}")
        await asyncio.wait_for(task, timeout=5)


async def test_events_of_an_unknown_session_are_404(http: httpx.AsyncClient) -> None:
    response = await http.get("/webrtc/sessions/nope/events")
    assert response.status_code == 404
    assert "does not exist" in response.json()["detail"]
