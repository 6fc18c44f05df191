"""Several sessions speak at once through the one render worker."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.audio_files import encode, speech_like
from tests.webrtc_client import ClientPeer

from server.settings import Settings
from tests.conftest import make_settings

pytestmark = pytest.mark.webrtc


@pytest.fixture
def settings() -> Settings:
    # The demo engine starts a frame at most 0.5 s before it is wanted, so its sessions'
    # frames reach the queue a group at a time; here the worker may work as far ahead as
    # a model engine (MuseTalk) does, which is what batches across sessions.
    return make_settings(lipsync_render_ahead_seconds=3600.0)


async def test_two_sessions_speak_at_once_sharing_render_batches(http: httpx.AsyncClient) -> None:
    peers = []
    try:
        for _ in range(2):
            # Long first chunks: each session queues 100 frames at once, so the two
            # sessions' frames are in the queue together whatever the machine's load.
            params = {"batch_size": 4, "fps": 25, "chunk_duration": 4}
            sid = (await http.post("/webrtc/sessions/create", params=params)).json()["session_id"]
            peer = ClientPeer(http, sid)
            await peer.connect()
            peers.append(peer)
        audio = encode(speech_like(4.0), "wav")
        responses = await asyncio.gather(
            *(http.post(f"/webrtc/sessions/{p.session_id}/stream", files={"audio_file": ("a.wav", audio, "audio/wav")})
              for p in peers)
        )
        assert [r.status_code for r in responses] == [200, 200]
        for peer in peers:
            await peer.wait_for_event("speaking_ended", timeout=10)
            assert max(v.mouth_dark for v in peer.received.video) > 0.08
        health = (await http.get("/health")).json()
        # Both sessions' frames waited in the one queue and shared batches.
        assert health["worker"]["shared_batches"] > 0
        assert health["sessions"] == 2
    finally:
        for peer in peers:
            await peer.close()
