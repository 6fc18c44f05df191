"""The musetalk engine end to end: tiny random weights in the official layout, a real client.

The weights are random, so the generated lower face is noise: speech shows as frames
whose lower face matches none of the avatar's own frames, idle as frames that match one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest

from server.lipsync.demo.face import build_demo_avatar
from tests.audio_files import encode, speech_like
from tests.conftest import make_settings, running_app
from tests.webrtc_client import ClientPeer

pytestmark = pytest.mark.webrtc

FPS = 10
UTTERANCE_SECONDS = 2.0
# The demo face's mouth and chin (the part MuseTalk regenerates), in its 512 x 512 frames.
LOWER_FACE = (slice(300, 400), slice(180, 330))
# Mean absolute difference (0-255) from the closest avatar frame: VP8 keeps idle frames
# within a few levels; a generated face from random weights is far from every frame.
IDLE_AT_MOST = 6.0
SPEAKING_AT_LEAST = 15.0


def distance_to_avatar(image: np.ndarray, references: np.ndarray) -> float:
    region = image[LOWER_FACE].astype(np.float32)
    return float(np.abs(references - region).mean(axis=(1, 2, 3)).min())


async def test_musetalk_speaks_over_webrtc_and_returns_to_idle(tiny_models: Path, tmp_path: Path) -> None:
    settings = make_settings(
        lipsync_engine="musetalk", models_dir=tiny_models, lipsync_device="cpu", avatars_dir=tmp_path
    )
    async with running_app(settings) as http:
        health = (await http.get("/health")).json()
        assert health["engine"] == "musetalk"
        assert health["engine_details"]["version"] == "1.5"

        response = await http.post("/webrtc/sessions/create", params={"fps": FPS, "playback_fps": FPS})
        assert response.status_code == 200, response.text
        session_id = response.json()["session_id"]
        peer = ClientPeer(http, session_id, keep_images=True)
        try:
            await peer.connect()
            await asyncio.sleep(1.5)
            idle_count = len(peer.received.video)
            response = await upload(http, session_id, encode(speech_like(UTTERANCE_SECONDS), "wav"))
            assert response.status_code == 200, response.text
            await peer.wait_for_event("speaking_started", timeout=30)
            await peer.wait_for_event("speaking_ended", timeout=60)
            await asyncio.sleep(1.5)
            info = (await http.get(f"/webrtc/sessions/{session_id}")).json()
            assert info["state"] == "idle"
        finally:
            await peer.close()

    references = build_demo_avatar().frames[(slice(None), *LOWER_FACE)].astype(np.float32)
    distances = [distance_to_avatar(v.image, references) for v in peer.received.video]
    speaking = [d >= SPEAKING_AT_LEAST for d in distances]
    assert max(distances[:idle_count]) <= IDLE_AT_MOST, distances[:idle_count]
    first = speaking.index(True)
    last = len(speaking) - 1 - speaking[::-1].index(True)
    # One run of generated frames as long as the utterance (and any pauses the audio made
    # for rendering to catch up), then the idle loop again.
    shown = " ".join(f"{d:.0f}" for d in distances)
    assert all(speaking[first : last + 1]), shown
    longest = (UTTERANCE_SECONDS + info["sync"]["audio_hold_seconds"]) * FPS
    assert UTTERANCE_SECONDS * FPS - 2 <= last + 1 - first <= longest + 2, shown
    after = distances[last + 1 :]
    assert len(after) >= 5 and max(after) <= IDLE_AT_MOST, after


async def upload(http: httpx.AsyncClient, session_id: str, data: bytes) -> httpx.Response:
    return await http.post(
        f"/webrtc/sessions/{session_id}/stream",
        files={"audio_file": ("speech.wav", data, "application/octet-stream")},
    )
