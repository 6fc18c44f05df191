"""Idle viewers of one avatar are sent its idle loop encoded once; speech switches cleanly."""

from __future__ import annotations

import asyncio
import logging

import httpx
import numpy as np
import pytest

from server.sessions.session import Session
from tests.audio_files import encode, speech_like
from tests.webrtc_client import MOUTH_BOX, ClientPeer

pytestmark = pytest.mark.webrtc

# Outside the mouth (and the few pixels the head sways), a decoded frame is one of the
# avatar's pictures; a frame decoded on the wrong reference is far from all of them.
MOUTH_MARGIN = 24
MIN_PSNR_DB = 30.0
# The loop is encoded in the background when a session of the avatar first needs it
# (a second or two of one core); on a loaded machine it can take several.
LOOP_READY_SECONDS = 30.0


SUBSAMPLE = 4  # every 4th pixel each way: plenty to tell a good picture from a broken one


class OutsideTheMouth:
    """The avatar's frames outside the mouth, to match decoded frames against."""

    def __init__(self, frames: np.ndarray) -> None:
        x1, y1, x2, y2 = MOUTH_BOX
        keep = np.ones(frames.shape[1:3], bool)
        keep[y1 - MOUTH_MARGIN : y2 + MOUTH_MARGIN, x1 - MOUTH_MARGIN : x2 + MOUTH_MARGIN] = False
        self._keep = keep[::SUBSAMPLE, ::SUBSAMPLE]
        self._frames = frames[:, ::SUBSAMPLE, ::SUBSAMPLE][:, self._keep].astype(np.float32)

    def psnr_to_nearest(self, image: np.ndarray) -> float:
        pixels = image[::SUBSAMPLE, ::SUBSAMPLE][self._keep].astype(np.float32)
        errors = ((self._frames - pixels) ** 2).mean(axis=(1, 2))
        return float(10 * np.log10(255**2 / max(float(errors.min()), 1e-6)))


def worst_psnr(peer: ClientPeer, frames: np.ndarray) -> float:
    pictures = OutsideTheMouth(frames)
    return min(pictures.psnr_to_nearest(v.image) for v in peer.received.video if v.image is not None)


async def wait_until(predicate, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.05)


async def open_session(http: httpx.AsyncClient, **params: object) -> tuple[Session, ClientPeer]:
    response = await http.post("/webrtc/sessions/create", params=params)
    assert response.status_code == 200, response.text
    session_id = response.json()["session_id"]
    peer = ClientPeer(http, session_id, keep_images=True)
    await peer.connect()
    return http.app.state.server.sessions.find(session_id), peer


def shared_frames(session: Session) -> int:
    track = session.video_track
    return 0 if track is None else track.frames_shared


@pytest.mark.parametrize(("fps", "playback_fps"), [(10, 15), (25, 25)])
async def test_receiver_decodes_every_frame_across_idle_speech_idle(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, fps: int, playback_fps: int
) -> None:
    caplog.set_level(logging.WARNING, logger="aiortc")
    session, peer = await open_session(http, fps=fps, playback_fps=playback_fps)
    try:
        await wait_until(lambda: shared_frames(session) > playback_fps, timeout=LOOP_READY_SECONDS)
        response = await http.post(
            f"/webrtc/sessions/{session.id}/stream",
            files={"audio_file": ("speech.wav", encode(speech_like(1.5, bursts=[(0.2, 1.2)]), "wav"))},
        )
        assert response.status_code == 200, response.text
        await peer.wait_for_event("speaking_ended", timeout=10)
        after_speech = shared_frames(session)
        await wait_until(lambda: shared_frames(session) > after_speech + playback_fps, timeout=10)
        track = session.video_track
        assert track is not None
        sent = track.frames_sent
    finally:
        await peer.close()

    assert track.loop_switches >= 3  # joined, left for speech, joined again
    frames = session.avatar.avatar.frames
    video = peer.received.video
    assert len(video) >= sent - 3
    assert worst_psnr(peer, frames) > MIN_PSNR_DB
    assert not [r for r in caplog.records if "failed to decode" in r.getMessage()]


async def test_two_sessions_on_one_avatar_send_the_same_loop(http: httpx.AsyncClient) -> None:
    first, first_peer = await open_session(http)
    second, second_peer = await open_session(http)
    try:
        await wait_until(lambda: shared_frames(first) > 15 and shared_frames(second) > 15, timeout=LOOP_READY_SECONDS)
        first_track, second_track = first.video_track, second.video_track
        assert first_track is not None and second_track is not None
        assert first_track._idle_loop is second_track._idle_loop
        # Once both are on the loop, neither encodes: its own encoder stands still.
        encoded = (first_track._encoder.frames_encoded, second_track._encoder.frames_encoded)
        await asyncio.sleep(1.0)
        assert (first_track._encoder.frames_encoded, second_track._encoder.frames_encoded) == encoded
    finally:
        await first_peer.close()
        await second_peer.close()
    for peer in (first_peer, second_peer):
        assert worst_psnr(peer, first.avatar.avatar.frames) > MIN_PSNR_DB


async def test_keyframe_request_is_answered_with_a_keyframe_while_on_the_loop(http: httpx.AsyncClient) -> None:
    session, peer = await open_session(http)
    try:
        await wait_until(lambda: shared_frames(session) > 15, timeout=LOOP_READY_SECONDS)
        track = session.video_track
        assert track is not None
        keyframes = track.keyframes_encoded
        receiver = next(t.receiver for t in peer.pc.getTransceivers() if t.kind == "video")
        ssrc = next(iter(receiver._RTCRtpReceiver__active_ssrc))  # aiortc private: the stream's SSRC
        await receiver._send_rtcp_pli(ssrc)
        await wait_until(lambda: track.keyframes_encoded > keyframes, timeout=5)
        assert track.keyframe_requests >= 1
        # And back on the loop at its next keyframe.
        shared = shared_frames(session)
        await wait_until(lambda: shared_frames(session) > shared + 5, timeout=5)
    finally:
        await peer.close()
