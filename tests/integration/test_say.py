"""`POST /webrtc/sessions/{id}/say`: text spoken through the TTS backend, at a real receiver."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

import httpx
import pytest

from tests.audio_files import encode, speech_like
from tests.conftest import make_settings, running_app
from tests.fake_openai import FakeOpenAiServer
from tests.integration.test_busy_policy import connected_session, wait_for
from tests.webrtc_client import SenderTimeline, audio_envelope

pytestmark = [
    pytest.mark.webrtc,
    pytest.mark.skipif(
        shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"
    ),
]

LOUD_RMS = 0.02
SSML = '<speak>Hello <break time="1s"/> world</speak>'


async def say(http: httpx.AsyncClient, sid: str, text: str, **fields: object) -> httpx.Response:
    return await http.post(f"/webrtc/sessions/{sid}/say", json={"text": text, **fields})


async def test_said_text_reaches_a_connected_peer_as_speech_with_its_events(
    http: httpx.AsyncClient,
) -> None:
    sid, peer = await connected_session(http)
    try:
        await asyncio.sleep(0.5)  # some idle audio first
        response = await say(http, sid, "Hello, I am the avatar. Nice to meet you.")
        assert response.status_code == 200, response.text
        accepted = response.json()
        assert accepted["text"] == "Hello, I am the avatar. Nice to meet you."
        assert accepted["tts_engine"] == "espeak" and accepted["voice"] == "en-us"
        assert 1.5 < accepted["duration_seconds"] < 6
        assert accepted["queue_position"] == 0
        uid = accepted["utterance_id"]
        await wait_for(peer, "utterance_queued", uid, timeout=2)
        started = await wait_for(peer, "speaking_started", uid, timeout=5)
        ended = await wait_for(peer, "speaking_ended", uid, timeout=accepted["duration_seconds"] + 5)
        await asyncio.sleep(0.3)
    finally:
        await peer.close()

    assert ended["played_seconds"] == pytest.approx(accepted["duration_seconds"], abs=0.03)
    timeline = SenderTimeline(peer.received)
    times, rms = audio_envelope(peer.received, timeline)
    speech_window = (times >= timeline.sender_time(started["time"] - 0.5)) & (
        times <= timeline.sender_time(ended["time"] + 0.5)
    )
    loud = times[speech_window & (rms > LOUD_RMS)]
    assert len(loud) > 0, "no speech energy arrived"
    # Speech energy over most of the utterance, silence before it.
    assert loud[-1] - loud[0] > 0.7 * accepted["duration_seconds"]
    before = rms[times < loud[0] - 0.2]
    assert len(before) > 20 and before.max() < 1e-3


async def test_ssml_tags_are_not_spoken(http: httpx.AsyncClient) -> None:
    sid, peer = await connected_session(http)
    try:
        marked = await say(http, sid, SSML, mode="queue")
        plain = await say(http, sid, "Hello, world", mode="queue")
        spoken_tags = await say(http, sid, "speak Hello break time 1 s world speak", mode="queue")
    finally:
        await peer.close()
    assert marked.status_code == plain.status_code == spoken_tags.status_code == 200
    assert marked.json()["text"] == "Hello, world"
    # The tags add no speech: as long as the plain words, far shorter than saying the tags.
    assert marked.json()["duration_seconds"] == pytest.approx(plain.json()["duration_seconds"], abs=0.02)
    assert spoken_tags.json()["duration_seconds"] > 1.5 * marked.json()["duration_seconds"]


async def test_say_queues_and_interrupts_like_stream(http: httpx.AsyncClient) -> None:
    sid, peer = await connected_session(http)
    try:
        first = await say(http, sid, "This is a rather long first sentence to keep the avatar busy.")
        busy = await say(http, sid, "Second.")
        queued = await say(http, sid, "Second.", mode="queue")
        cut = await say(http, sid, "Stop.", mode="interrupt")
    finally:
        await peer.close()
    assert first.status_code == 200
    assert busy.status_code == 409 and "mode=queue" in busy.json()["detail"]
    assert queued.json()["queue_position"] == 1
    assert cut.json()["interrupted"]["utterance_id"] == first.json()["utterance_id"]
    assert cut.json()["dropped_utterance_ids"] == [queued.json()["utterance_id"]]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"text": ""}, "nothing to say"),
        ({"text": "<speak> <break/> </speak>"}, "nothing to say"),
        ({"text": "a" * 1001}, "TTS_MAX_CHARS"),
        ({"text": "Hello", "voice": "no-such-voice"}, "Unknown espeak voice"),
        ({"text": "Hello", "voice": "--help"}, "Unknown espeak voice"),
        ({"text": "Hello", "mode": "shout"}, "mode"),
    ],
)
async def test_unusable_text_voice_or_mode_is_422(
    http: httpx.AsyncClient, body: dict, words: str
) -> None:
    sid, peer = await connected_session(http)
    try:
        response = await http.post(f"/webrtc/sessions/{sid}/say", json=body)
    finally:
        await peer.close()
    assert response.status_code == 422
    assert words in response.json()["detail"]


async def test_text_whose_speech_is_longer_than_max_audio_seconds_is_413() -> None:
    async with running_app(make_settings(max_audio_seconds=1.0)) as http:
        sid, peer = await connected_session(http)
        try:
            response = await say(http, sid, "This sentence takes well over a second to say.")
        finally:
            await peer.close()
    assert response.status_code == 413 and "MAX_AUDIO_SECONDS" in response.json()["detail"]


async def test_a_named_espeak_voice_is_used(http: httpx.AsyncClient) -> None:
    sid, peer = await connected_session(http)
    try:
        response = await say(http, sid, "Guten Tag", voice="de")
    finally:
        await peer.close()
    assert response.status_code == 200 and response.json()["voice"] == "de"


async def test_say_before_a_client_connects_is_409(http: httpx.AsyncClient) -> None:
    sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
    response = await say(http, sid, "Hello")
    assert response.status_code == 409 and "connected" in response.json()["detail"]


async def test_an_unavailable_tts_backend_is_503_with_a_sentence_and_the_session_works_on(
    tmp_path: Path,
) -> None:
    settings = make_settings(tts_engine="piper", tts_voices_dir=tmp_path / "voices")
    async with running_app(settings) as http:
        sid, peer = await connected_session(http)
        try:
            response = await say(http, sid, "Hello")
            audio = await http.post(
                f"/webrtc/sessions/{sid}/stream",
                files={"audio_file": ("s.wav", _wav(0.5), "audio/wav")},
            )
        finally:
            await peer.close()
    assert response.status_code == 503
    assert "No Piper voice in" in response.json()["detail"]
    assert audio.status_code == 200


async def test_a_failing_speech_service_is_503_not_500() -> None:
    # A port nothing listens on (bound, never accepting): the service cannot be reached.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}/v1"
        settings = make_settings(tts_engine="openai", tts_openai_url=url, tts_timeout_seconds=2)
        async with running_app(settings) as http:
            sid, peer = await connected_session(http)
            try:
                response = await say(http, sid, "Hello")
                info = await http.get(f"/webrtc/sessions/{sid}")
            finally:
                await peer.close()
    assert response.status_code == 503
    assert "could not be reached" in response.json()["detail"]
    assert info.json()["state"] == "idle"


@pytest.mark.parametrize("response_format", ["pcm", "wav"])
async def test_an_openai_compatible_speech_service_speaks_the_text(response_format: str) -> None:
    with FakeOpenAiServer() as fake:
        settings = make_settings(
            tts_engine="openai", tts_openai_url=fake.url, tts_openai_key="sk-test",
            tts_openai_format=response_format,
        )
        async with running_app(settings) as http:
            sid, peer = await connected_session(http)
            try:
                response = await say(http, sid, SSML, voice="nova")
            finally:
                await peer.close()
    assert response.status_code == 200, response.text
    request = fake.service.speech_requests[-1]
    assert request == {
        "model": "tts-1", "input": "Hello, world", "voice": "nova", "response_format": response_format,
    }
    # The fake answers 0.03 s per character.
    assert response.json()["duration_seconds"] == pytest.approx(len("Hello, world") * 0.03, abs=0.01)


def _wav(seconds: float) -> bytes:
    return encode(speech_like(seconds), "wav")


async def test_a_piper_voice_from_the_voices_folder_speaks_the_text(tmp_path: Path) -> None:
    pytest.importorskip("piper")
    from tests.piper_voices import write_tiny_voice

    write_tiny_voice(tmp_path / "tts", "tiny")
    settings = make_settings(tts_engine="piper", tts_voices_dir=tmp_path / "tts")
    async with running_app(settings) as http:
        sid, peer = await connected_session(http)
        try:
            marked = await say(http, sid, SSML, mode="queue")
            plain = await say(http, sid, "Hello, world", voice="tiny", mode="queue")
            unknown = await say(http, sid, "Hello", voice="nobody")
        finally:
            await peer.close()
    assert marked.status_code == 200, marked.text
    assert marked.json()["voice"] == "tiny" and marked.json()["tts_engine"] == "piper"
    # The tiny voice's audio is as long as its phonemes: the tags gave it none.
    assert marked.json()["duration_seconds"] == plain.json()["duration_seconds"]
    assert unknown.status_code == 422 and "tiny" in unknown.json()["detail"]
