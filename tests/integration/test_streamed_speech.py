"""Speech streamed in over `WS /webrtc/sessions/{id}/speech`, heard by a real aiortc receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import numpy as np
import pytest

from tests.audio_files import speech_like
from tests.conftest import make_settings
from tests.live_server import LiveServer
from tests.speech_streamer import SpeechStreamer, pcm_s16
from tests.webrtc_client import ClientPeer, SenderTimeline, audio_envelope, edges

pytestmark = pytest.mark.webrtc

RATE = 24_000
BYTES_PER_SECOND = RATE * 2
BURSTS = [(0.3, 0.7), (1.1, 1.5), (1.9, 2.4)]
SECONDS = 2.8
LOUD_RMS = 0.05
OPEN_MOUTH = 0.08
CLOSED_MOUTH = 0.03
START = {"type": "start", "format": "pcm_s16le", "sample_rate": RATE, "channels": 1}


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    server = LiveServer(make_settings(max_audio_seconds=20.0), host="127.0.0.1")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def http(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as client:
        yield client


async def connected(http: httpx.AsyncClient, fps: int = 10, playback_fps: int = 15) -> tuple[str, ClientPeer]:
    response = await http.post("/webrtc/sessions/create", params={"fps": fps, "playback_fps": playback_fps})
    assert response.status_code == 200, response.text
    sid = response.json()["session_id"]
    peer = ClientPeer(http, sid)
    await peer.connect()
    return sid, peer


def speech(seconds: float = SECONDS, bursts: list[tuple[float, float]] = BURSTS) -> bytes:
    return pcm_s16(speech_like(seconds, rate=RATE, bursts=bursts))


async def test_streamed_pcm_is_heard_in_sync_and_starts_before_the_stream_ends(
    http: httpx.AsyncClient, live: LiveServer
) -> None:
    sid, peer = await connected(http)
    try:
        async with SpeechStreamer(live.url, sid) as streamer:
            await streamer.send_json(START)
            accepted = await streamer.wait_for("accepted", timeout=5)
            sending = asyncio.ensure_future(streamer.stream(speech(), 0.04, BYTES_PER_SECOND))
            started = await streamer.wait_for("speaking_started", timeout=5)
            assert not sending.done(), "speech started only after the whole stream was sent"
            assert started["utterance_id"] == accepted["utterance_id"]
            await sending
            await streamer.send_json({"type": "end"})
            complete = await streamer.wait_for("complete", timeout=5)
            assert complete["duration_seconds"] == pytest.approx(SECONDS, abs=0.01)
            ended = await streamer.wait_for("speaking_ended", timeout=10)
            assert ended["played_seconds"] == pytest.approx(SECONDS, abs=0.01)
        await asyncio.sleep(0.8)
        info = (await http.get(f"/webrtc/sessions/{sid}")).json()
        assert info["state"] == "idle"
        assert info["sync"]["utterances_finished"] == 1
    finally:
        await peer.close()

    received = peer.received
    timeline = SenderTimeline(received)
    times, rms = audio_envelope(received, timeline)
    sound_on, sound_off = edges(times, rms > LOUD_RMS)
    assert len(sound_on) == len(BURSTS), sound_on
    # No input ran dry at real time: the bursts keep their spacing.
    np.testing.assert_allclose(np.diff(sound_on), np.diff([b[0] for b in BURSTS]), atol=0.01)
    video_times = np.array([timeline.video_time(v.pts) for v in received.video])
    mouth = np.array([v.mouth_dark for v in received.video])
    mouth_on, mouth_off = edges(video_times, mouth > OPEN_MOUTH)
    assert len(mouth_on) == len(BURSTS), (mouth_on, sound_on)
    frame = 1 / 15
    for opened, heard in zip(mouth_on, sound_on):
        assert abs(opened - heard) <= frame + 0.005, (mouth_on, sound_on)
    for closed, quiet in zip(mouth_off, sound_off):
        assert abs(closed - quiet) <= frame + 0.005, (mouth_off, sound_off)
