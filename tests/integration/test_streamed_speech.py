"""Speech streamed in over `WS /webrtc/sessions/{id}/speech`, heard by a real aiortc receiver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import numpy as np
import pytest
import websockets

from tests.audio_files import encode, speech_like
from tests.conftest import make_settings, running_app
from tests.live_server import LiveServer
from tests.speech_streamer import SpeechStreamer, ogg_opus, pcm_s16
from tests.webrtc_client import ClientPeer, SenderTimeline, audio_envelope, edges

pytestmark = pytest.mark.webrtc

RATE = 24_000
BYTES_PER_SECOND = RATE * 2
BURSTS = [(0.3, 0.7), (1.1, 1.5), (1.9, 2.4)]
SECONDS = 2.8
LOUD_RMS = 0.05
OPEN_MOUTH = 0.08
CLOSED_MOUTH = 0.03
MAX_SECONDS = 4.0
MAX_BUFFER = 1.5
START = {"type": "start", "format": "pcm_s16le", "sample_rate": RATE, "channels": 1}


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    settings = make_settings(max_audio_seconds=MAX_SECONDS, stream_max_buffer_seconds=MAX_BUFFER)
    server = LiveServer(settings, host="127.0.0.1")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def http(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as client:
        client.created = []  # type: ignore[attr-defined]
        yield client
        for sid in client.created:  # type: ignore[attr-defined]
            await client.delete(f"/webrtc/sessions/{sid}")


async def connected(http: httpx.AsyncClient, fps: int = 10, playback_fps: int = 15) -> tuple[str, ClientPeer]:
    response = await http.post("/webrtc/sessions/create", params={"fps": fps, "playback_fps": playback_fps})
    assert response.status_code == 200, response.text
    sid = response.json()["session_id"]
    http.created.append(sid)  # type: ignore[attr-defined]
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
            # A TTS a little faster than real time: the test is not about input running dry.
            sending = asyncio.ensure_future(streamer.stream(speech(), 0.04, BYTES_PER_SECOND, pace=1.3))
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
    # No input ran dry: the bursts keep their spacing.
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


async def test_input_slower_than_real_time_holds_in_silence_with_the_mouth_closed(
    http: httpx.AsyncClient, live: LiveServer
) -> None:
    seconds = 2.4
    sid, peer = await connected(http)
    try:
        async with SpeechStreamer(live.url, sid) as streamer:
            await streamer.send_json(START)
            await streamer.wait_for("accepted", timeout=5)
            # A steady voice, sent at half real time.
            data = speech(seconds, bursts=[(0.0, seconds)])
            await streamer.stream(data, 0.04, BYTES_PER_SECOND, pace=0.5)
            await streamer.send_json({"type": "end"})
            ended = await streamer.wait_for("speaking_ended", timeout=10)
            underruns = streamer.result.of_type("input_underrun")
            resumed = streamer.result.of_type("input_resumed")
        info = (await http.get(f"/webrtc/sessions/{sid}")).json()
    finally:
        await peer.close()

    sync = info["sync"]
    assert sync["input_underruns"] >= 2
    assert sync["input_underruns"] == len(underruns)
    assert len(resumed) == len(underruns)
    assert sync["input_wait_seconds"] == pytest.approx(sum(r["waited_seconds"] for r in resumed), abs=0.05)
    assert sync["input_wait_seconds"] > seconds * 0.5
    assert ended["played_seconds"] == pytest.approx(seconds, abs=0.01)

    received = peer.received
    timeline = SenderTimeline(received)
    times, rms = audio_envelope(received, timeline)
    sound_on, sound_off = edges(times, rms > LOUD_RMS)
    # Each hold is one silent gap: the voice plays in runs, never in stutters (after the
    # first, which starts on the first frame's audio, each is STREAM_REBUFFER_SECONDS or more).
    assert len(sound_on) == len(underruns) + 1, (sound_on, sound_off)
    runs = np.array(sound_off) - np.array(sound_on[: len(sound_off)])
    assert runs[1:].min() >= 0.15, runs
    gaps = np.array(sound_on[1:]) - np.array(sound_off[: len(sound_on) - 1])
    assert gaps.min() >= 0.1, gaps
    # While it waits the mouth is closed (not a frozen open mouth).
    video_times = np.array([timeline.video_time(v.pts) for v in received.video])
    mouth = np.array([v.mouth_dark for v in received.video])
    frame = 1 / 15
    for quiet, loud in zip(sound_off, sound_on[1:]):
        inside = mouth[(video_times > quiet + frame) & (video_times < loud - frame)]
        assert len(inside) >= 1 and inside.max() < CLOSED_MOUTH, (quiet, loud, inside)
    for loud, quiet in zip(sound_on[1:], sound_off[1:]):
        inside = mouth[(video_times > loud + frame) & (video_times < quiet - frame)]
        assert len(inside) >= 1 and inside.min() > OPEN_MOUTH


async def test_interrupt_stops_a_streamed_utterance_and_the_socket_can_start_another(
    http: httpx.AsyncClient, live: LiveServer
) -> None:
    sid, peer = await connected(http)
    try:
        async with SpeechStreamer(live.url, sid) as streamer:
            await streamer.send_json(START)
            accepted = await streamer.wait_for("accepted", timeout=5)
            sending = asyncio.ensure_future(streamer.stream(speech(3.0, [(0.0, 3.0)]), 0.04, BYTES_PER_SECOND))
            await streamer.wait_for("speaking_started", timeout=5)
            await asyncio.sleep(0.5)
            answer = await http.post(f"/webrtc/sessions/{sid}/interrupt")
            assert answer.status_code == 200, answer.text
            assert answer.json()["interrupted"]["utterance_id"] == accepted["utterance_id"]
            cut = await streamer.wait_for("utterance_interrupted", timeout=5)
            assert 0.3 < cut["played_seconds"] < 1.2
            await sending  # the rest of the stream is read and dropped
            await streamer.send_json({"type": "end"})
            await streamer.wait_for("complete", timeout=5)
            info = (await http.get(f"/webrtc/sessions/{sid}")).json()
            assert info["state"] == "idle"
            streamer.result.messages.clear()
            await streamer.send_json(START)
            again = await streamer.wait_for("accepted", timeout=5)
            assert again["utterance_id"] != accepted["utterance_id"]
            await streamer.stream(speech(0.5, [(0.0, 0.5)]), 0.05, BYTES_PER_SECOND, pace=4)
            await streamer.send_json({"type": "end"})
            await streamer.wait_for("speaking_ended", timeout=5)
    finally:
        await peer.close()


async def test_a_client_sending_faster_than_real_time_is_told_to_pause_and_everything_plays(
    http: httpx.AsyncClient, live: LiveServer
) -> None:
    seconds = 3.0
    sid, peer = await connected(http)
    try:
        async with SpeechStreamer(live.url, sid) as streamer:
            await streamer.send_json(START)
            await streamer.wait_for("accepted", timeout=5)
            await streamer.stream(speech(seconds, [(0.0, seconds)]), 0.1, BYTES_PER_SECOND, pace=50)
            await streamer.send_json({"type": "end"})
            pause = await streamer.wait_for("pause", timeout=5)
            assert pause["buffered_seconds"] >= MAX_BUFFER
            await streamer.wait_for("resume", timeout=5)
            ended = await streamer.wait_for("speaking_ended", timeout=10)
            assert ended["played_seconds"] == pytest.approx(seconds, abs=0.01)
    finally:
        await peer.close()


async def test_the_chunked_http_form_starts_speaking_before_the_body_ends(
    http: httpx.AsyncClient, live: LiveServer
) -> None:
    seconds = 2.0
    sid, peer = await connected(http)
    data = speech(seconds, [(0.0, seconds)])
    sent_all = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        step = int(0.05 * BYTES_PER_SECOND) + 1  # odd sizes: samples cut across chunks
        for offset in range(0, len(data), step):
            yield data[offset : offset + step]
            await asyncio.sleep(0.05)
        sent_all.set()

    try:
        posting = asyncio.ensure_future(http.post(
            f"/webrtc/sessions/{sid}/speech",
            params={"format": "pcm_s16le", "sample_rate": RATE, "channels": 1},
            content=body(),
        ))
        await peer.wait_for_event("speaking_started", timeout=5)
        assert not sent_all.is_set()
        response = await posting
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["duration_seconds"] == pytest.approx(seconds, abs=0.01)
        assert answer["format"] == "pcm_s16le" and answer["sample_rate"] == RATE
        ended = await peer.wait_for_event("speaking_ended", timeout=5)
        assert ended["utterance_id"] == answer["utterance_id"]
    finally:
        await peer.close()


@pytest.mark.parametrize(
    ("first", "then", "code", "words"),
    [
        (None, b"\x00\x00", 4422, "start message"),
        ({"type": "start"}, None, 4422, "Declare the audio format"),
        ({**START, "format": "wav"}, None, 4422, "Unknown audio format"),
        ({**START, "sample_rate": 12345}, None, 4422, "sample_rate 12345"),
        ({**START, "sample_rate": 10**12}, None, 4422, "is not supported"),
        ({**START, "channels": 9}, None, 4422, "channels"),
        ({**START, "mode": "shout"}, None, 4422, "Unknown mode"),
        (START, b"\x00\x00\x00", 4422, "whole samples"),
        (START, b"\x00" * int((MAX_SECONDS + 0.5) * BYTES_PER_SECOND), 4413, "MAX_AUDIO_SECONDS"),
        ({"type": "shout"}, None, 4422, "Unknown message type"),
    ],
)
async def test_bad_input_gets_a_sentence_and_a_close_code_and_the_session_keeps_working(
    http: httpx.AsyncClient, live: LiveServer, first: dict | None, then: bytes | None, code: int, words: str
) -> None:
    sid, peer = await connected(http)
    try:
        async with SpeechStreamer(live.url, sid) as streamer:
            if first is not None:
                await streamer.send_json(first)
            if then is not None:
                if first is not None:
                    await streamer.wait_for("accepted", timeout=5)
                step = 64 * 1024
                for offset in range(0, len(then), step):
                    await streamer.send_bytes(then[offset : offset + step])
            assert await streamer.wait_closed(5) == code
            error = streamer.result.of_type("error")[0]
            assert words in error["detail"], error
            assert error["status"] == code - 4000
        async with SpeechStreamer(live.url, sid) as streamer:
            await streamer.send_json(START)
            await streamer.wait_for("accepted", timeout=5)
            await streamer.stream(speech(0.5, [(0.0, 0.5)]), 0.05, BYTES_PER_SECOND, pace=4)
            await streamer.send_json({"type": "end"})
            await streamer.wait_for("speaking_ended", timeout=5)
    finally:
        await peer.close()


async def test_an_unknown_session_and_a_busy_one_are_refused_with_their_codes(
    http: httpx.AsyncClient, live: LiveServer
) -> None:
    async with SpeechStreamer(live.url, "nosuchsession") as streamer:
        assert await streamer.wait_closed(5) == 4404
    sid, peer = await connected(http)
    try:
        async with SpeechStreamer(live.url, sid) as first:
            await first.send_json(START)
            await first.wait_for("accepted", timeout=5)
            async with SpeechStreamer(live.url, sid) as second:
                await second.send_json(START)  # mode reject while the first is open
                assert await second.wait_closed(5) == 4409
                assert "still speaking" in second.result.of_type("error")[0]["detail"]
            async with SpeechStreamer(live.url, sid) as third:
                await third.send_json({**START, "mode": "queue"})
                queued = await third.wait_for("accepted", timeout=5)
                assert queued["queue_position"] == 1
    finally:
        await peer.close()


@pytest.mark.parametrize("format", ["mp3", "ogg_opus"])
async def test_encoded_streams_are_decoded_as_they_arrive(
    http: httpx.AsyncClient, live: LiveServer, format: str
) -> None:
    seconds = 1.5
    voice = speech_like(seconds, rate=48_000 if format == "ogg_opus" else RATE, bursts=[(0.0, seconds)])
    data = ogg_opus(voice, page_seconds=0.06) if format == "ogg_opus" else encode(voice, "mp3", rate=RATE)
    sid, peer = await connected(http)
    try:
        async with SpeechStreamer(live.url, sid, query=f"format={format}") as streamer:
            accepted = await streamer.wait_for("accepted", timeout=5)
            assert accepted["format"] == format
            bytes_per_second = len(data) / seconds
            sending = asyncio.ensure_future(streamer.stream(data, 0.06, bytes_per_second))
            await streamer.wait_for("speaking_started", timeout=5)
            assert not sending.done()
            await sending
            await streamer.send_json({"type": "end"})
            ended = await streamer.wait_for("speaking_ended", timeout=10)
            assert ended["played_seconds"] == pytest.approx(seconds, abs=0.06)
    finally:
        await peer.close()


def test_the_speech_socket_needs_an_api_key_when_the_server_has_keys() -> None:
    key = "k" * 24
    server = LiveServer(make_settings(api_keys=(key,)), host="127.0.0.1").start()

    async def attempt() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30, headers={"X-Api-Key": key}) as http:
            sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
            url = f"{server.url.replace('http', 'ws', 1)}/webrtc/sessions/{sid}/speech"
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(url):
                    pass
            assert refused.value.response.status_code == 403
            async with websockets.connect(url, additional_headers={"X-Api-Key": key}) as ws:
                await ws.send(json.dumps(START))
                answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
                # The key was taken; the session has no client connected yet.
                assert answer["type"] == "error" and answer["status"] == 409

    try:
        asyncio.run(attempt())
    finally:
        server.stop()
