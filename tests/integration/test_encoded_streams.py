"""MP3 and Ogg/Opus streamed in (WebSocket and chunked POST), decoded in isolated workers,
heard by a real aiortc receiver; hostile streams are refused and the session works on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import numpy as np
import pytest

from server.isolation.worker import CRASH_ON_PURPOSE
from tests.audio_files import encode, speech_like
from tests.conftest import make_settings
from tests.hostile_audio import encoded
from tests.live_server import LiveServer
from tests.speech_streamer import SpeechStreamer, ogg_opus, pcm_s16
from tests.webrtc_client import ClientPeer, SenderTimeline, audio_envelope, edges

pytestmark = pytest.mark.webrtc

SECONDS = 1.6
BURSTS = [(0.2, 0.7), (1.0, 1.4)]
CHUNK_BYTES = 400
"""Small pieces that cut Ogg pages and MP3 frames anywhere."""
LOUD_RMS = 0.05
OPEN_MOUTH = 0.08
MAX_SECONDS = 4.0
PCM_START = {"type": "start", "format": "pcm_s16le", "sample_rate": 24_000, "channels": 1}


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    server = LiveServer(make_settings(max_audio_seconds=MAX_SECONDS), host="127.0.0.1")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def http(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as client:
        created: list[str] = []
        client.created = created  # type: ignore[attr-defined]
        yield client
        for sid in created:
            await client.delete(f"/webrtc/sessions/{sid}")


async def connected(http: httpx.AsyncClient) -> tuple[str, ClientPeer]:
    response = await http.post("/webrtc/sessions/create")
    assert response.status_code == 200, response.text
    sid = response.json()["session_id"]
    http.created.append(sid)  # type: ignore[attr-defined]
    peer = ClientPeer(http, sid)
    await peer.connect()
    return sid, peer


def voice_in(format: str) -> bytes:
    if format == "ogg_opus":
        return ogg_opus(speech_like(SECONDS, rate=48_000, bursts=BURSTS), page_seconds=0.06)
    return encode(speech_like(SECONDS, rate=24_000, bursts=BURSTS), "mp3", rate=24_000)


def assert_heard_the_bursts(peer: ClientPeer) -> None:
    received = peer.received
    timeline = SenderTimeline(received)
    times, rms = audio_envelope(received, timeline)
    sound_on, _ = edges(times, rms > LOUD_RMS)
    assert len(sound_on) == len(BURSTS), sound_on
    np.testing.assert_allclose(np.diff(sound_on), np.diff([b[0] for b in BURSTS]), atol=0.03)
    video_times = np.array([timeline.video_time(v.pts) for v in received.video])
    mouth_on, _ = edges(video_times, np.array([v.mouth_dark for v in received.video]) > OPEN_MOUTH)
    assert len(mouth_on) == len(BURSTS), (mouth_on, sound_on)


@pytest.mark.parametrize("format", ["mp3", "ogg_opus"])
async def test_an_encoded_stream_over_the_socket_is_heard_before_it_ends(
    http: httpx.AsyncClient, live: LiveServer, format: str
) -> None:
    data = voice_in(format)
    sid, peer = await connected(http)
    try:
        async with SpeechStreamer(live.url, sid) as streamer:
            await streamer.send_json({"type": "start", "format": format})
            assert (await streamer.wait_for("accepted", timeout=5))["format"] == format
            per_second = len(data) / SECONDS
            sending = asyncio.ensure_future(streamer.stream(data, CHUNK_BYTES / per_second, per_second, pace=1.2))
            await streamer.wait_for("speaking_started", timeout=5)
            assert not sending.done(), "speech started only after the whole stream was sent"
            await sending
            await streamer.send_json({"type": "end"})
            ended = await streamer.wait_for("speaking_ended", timeout=10)
            assert ended["played_seconds"] == pytest.approx(SECONDS, abs=0.06)
        await asyncio.sleep(0.5)
    finally:
        await peer.close()
    assert_heard_the_bursts(peer)


@pytest.mark.parametrize("format", ["mp3", "ogg_opus"])
async def test_an_encoded_stream_in_a_chunked_post_is_heard_before_the_body_ends(
    http: httpx.AsyncClient, live: LiveServer, format: str
) -> None:
    data = voice_in(format)
    sid, peer = await connected(http)
    sent_all = asyncio.Event()
    pause = CHUNK_BYTES / (len(data) / SECONDS) / 1.2

    async def body() -> AsyncIterator[bytes]:
        for offset in range(0, len(data), CHUNK_BYTES):
            yield data[offset : offset + CHUNK_BYTES]
            await asyncio.sleep(pause)
        sent_all.set()

    try:
        posting = asyncio.ensure_future(
            http.post(f"/webrtc/sessions/{sid}/speech", params={"format": format}, content=body())
        )
        await peer.wait_for_event("speaking_started", timeout=5)
        assert not sent_all.is_set()
        response = await posting
        assert response.status_code == 200, response.text
        assert response.json()["duration_seconds"] == pytest.approx(SECONDS, abs=0.06)
        await peer.wait_for_event("speaking_ended", timeout=5)
        await asyncio.sleep(0.5)
    finally:
        await peer.close()
    assert_heard_the_bursts(peer)


def random_bytes(size: int) -> bytes:
    return np.random.default_rng(7).integers(0, 256, size, dtype=np.uint8).tobytes()


def truncated_ogg() -> bytes:
    return voice_in("ogg_opus")[:-100]


def mp3_bomb() -> bytes:
    """60 s of silent MP3 in 60 KB: one message, fifteen times MAX_SECONDS once decoded."""
    return encoded(60.0, 8_000, "mono", fmt="mp3", codec="libmp3lame", silent=True)


HOSTILE = [
    ("ogg_opus", lambda: random_bytes(8192), 422, "Not an Ogg stream"),
    ("mp3", lambda: random_bytes(256 * 1024), 422, "does not decode"),
    ("ogg_opus", truncated_ogg, 422, "ends inside a page"),
    ("mp3", mp3_bomb, 413, "MAX_AUDIO_SECONDS"),
    ("mp3", lambda: CRASH_ON_PURPOSE, 400, "crash"),
]
HOSTILE_IDS = ["random-ogg", "random-mp3", "truncated-ogg", "mp3-bomb", "decoder-crash"]


async def speaks_again(live: LiveServer, sid: str) -> None:
    async with SpeechStreamer(live.url, sid) as streamer:
        await streamer.send_json(PCM_START)
        await streamer.wait_for("accepted", timeout=5)
        await streamer.stream(pcm_s16(speech_like(0.4, rate=24_000)), 0.05, 48_000, pace=4)
        await streamer.send_json({"type": "end"})
        await streamer.wait_for("speaking_ended", timeout=5)


@pytest.mark.parametrize(("format", "make", "status", "words"), HOSTILE, ids=HOSTILE_IDS)
async def test_a_hostile_encoded_stream_closes_its_socket_with_the_status_and_the_session_works_on(
    http: httpx.AsyncClient, live: LiveServer, format: str, make, status: int, words: str
) -> None:
    sid, peer = await connected(http)
    try:
        async with SpeechStreamer(live.url, sid) as streamer:
            await streamer.send_json({"type": "start", "format": format})
            await streamer.wait_for("accepted", timeout=5)
            data = make()
            for offset in range(0, len(data), 64 * 1024):
                await streamer.send_bytes(data[offset : offset + 64 * 1024])
            await streamer.send_json({"type": "end"})
            assert await streamer.wait_closed(10) == 4000 + status
            error = streamer.result.of_type("error")[0]
            assert error["status"] == status and words in error["detail"], error
        await speaks_again(live, sid)
    finally:
        await peer.close()


@pytest.mark.parametrize(("format", "make", "status", "words"), HOSTILE, ids=HOSTILE_IDS)
async def test_a_hostile_encoded_post_gets_its_status_and_the_session_works_on(
    http: httpx.AsyncClient, live: LiveServer, format: str, make, status: int, words: str
) -> None:
    sid, peer = await connected(http)
    try:
        response = await http.post(f"/webrtc/sessions/{sid}/speech", params={"format": format}, content=make())
        assert response.status_code == status, response.text
        assert words in response.json()["detail"]
        await speaks_again(live, sid)
    finally:
        await peer.close()
