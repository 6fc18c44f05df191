"""Audio never waits behind video: with every VP8 encoder thread held, speech is still heard."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import numpy as np
import pytest

from tests.audio_files import encode, speech_like
from tests.webrtc_client import ClientPeer

pytestmark = pytest.mark.webrtc

HELD_SECONDS = 1.5
AUDIO_FRAMES_PER_SECOND = 50
LOUD_RMS = 0.05


async def test_speech_is_heard_in_real_time_while_the_video_encoders_are_all_busy(
    http: httpx.AsyncClient,
) -> None:
    server = http.app.state.server
    response = await http.post("/webrtc/sessions/create", params={"fps": 10, "playback_fps": 15})
    session_id = response.json()["session_id"]
    peer = ClientPeer(http, session_id)
    release = threading.Event()
    pool = server.sessions._media.video_executor
    try:
        await peer.connect()
        await asyncio.sleep(1.0)
        response = await http.post(
            f"/webrtc/sessions/{session_id}/stream",
            files={"audio_file": ("a.wav", encode(speech_like(4.0, bursts=[(0.0, 4.0)]), "wav"), "audio/wav")},
        )
        assert response.status_code == 200, response.text
        await peer.wait_for_event("speaking_started", timeout=10)
        await asyncio.sleep(0.3)
        # Every thread of the video pool is held: no VP8 frame can be encoded meanwhile.
        held = [pool.submit(release.wait, 10) for _ in range(pool._max_workers)]
        started = time.monotonic()
        await asyncio.sleep(HELD_SECONDS)
        ended = time.monotonic()
        release.set()
        await asyncio.gather(*(asyncio.wrap_future(f) for f in held))
        during = [a for a in peer.received.audio if started + 0.1 <= a.arrival <= ended]
        video_during = [v for v in peer.received.video if started + 0.3 <= v.arrival <= ended]
        # The audio went on at its own pace, and it was the speech, not silence.
        assert len(during) >= 0.85 * AUDIO_FRAMES_PER_SECOND * (ended - started - 0.1), len(during)
        loud = sum(float(np.sqrt(np.mean(a.samples**2))) > LOUD_RMS for a in during)
        assert loud >= 0.8 * len(during), (loud, len(during))
        assert not video_during  # the pool was indeed what the video waited for
        await peer.wait_for_event("speaking_ended", timeout=10)
    finally:
        release.set()
        await peer.close()
