"""`POST /say` with an OpenAI-compatible speech service that streams: the avatar speaks
before the service has finished, heard by a real aiortc receiver."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.conftest import make_settings, running_app
from tests.fake_openai import SPEECH_SECONDS_PER_CHAR, FakeOpenAiServer
from tests.integration.test_busy_policy import connected_session
from tests.webrtc_client import SenderTimeline, audio_envelope

pytestmark = pytest.mark.webrtc

TEXT = "This sentence takes the fake speech service almost two seconds."
SECONDS = len(TEXT) * SPEECH_SECONDS_PER_CHAR
LOUD_RMS = 0.05


@pytest.mark.parametrize("response_format", ["pcm", "mp3", "opus"])
async def test_said_text_starts_speaking_before_the_speech_service_has_finished(response_format: str) -> None:
    with FakeOpenAiServer() as fake:
        fake.service.speech_pace = 1.5  # a little faster than it speaks, as such services are
        settings = make_settings(
            tts_engine="openai", tts_openai_url=fake.url, tts_openai_format=response_format,
        )
        async with running_app(settings) as http:
            sid, peer = await connected_session(http)
            try:
                saying = asyncio.ensure_future(
                    http.post(f"/webrtc/sessions/{sid}/say", json={"text": TEXT})
                )
                started = await peer.wait_for_event("speaking_started", timeout=5)
                assert not fake.service.speech_finished_at, "spoke only after synthesis ended"
                assert not saying.done()
                response = await saying
                assert response.status_code == 200, response.text
                assert fake.service.speech_finished_at
                ended = await peer.wait_for_event("speaking_ended", timeout=5)
                await asyncio.sleep(0.3)
            finally:
                await peer.close()
    answer = response.json()
    assert answer["utterance_id"] == started["utterance_id"] == ended["utterance_id"]
    assert answer["tts_engine"] == "openai"
    assert answer["duration_seconds"] == pytest.approx(SECONDS, abs=0.06)
    assert fake.service.speech_requests[-1]["response_format"] == response_format
    received = peer.received
    times, rms = audio_envelope(received, SenderTimeline(received))
    loud = times[rms > LOUD_RMS]
    assert loud.size and loud[-1] - loud[0] == pytest.approx(SECONDS, abs=0.1)
    assert np.count_nonzero(rms > LOUD_RMS) > 0.8 * SECONDS / (times[1] - times[0])


async def test_a_speech_service_refusing_the_text_is_503_and_nothing_is_spoken() -> None:
    with FakeOpenAiServer() as fake:
        settings = make_settings(tts_engine="openai", tts_openai_url=fake.url)
        async with running_app(settings) as http:
            sid, peer = await connected_session(http)
            try:
                response = await http.post(f"/webrtc/sessions/{sid}/say", json={"text": "Hi", "voice": "nobody"})
                info = (await http.get(f"/webrtc/sessions/{sid}")).json()
            finally:
                await peer.close()
    assert response.status_code == 503, response.text
    assert "answered 400" in response.json()["detail"]
    assert info["state"] == "idle" and info["utterance"] is None
