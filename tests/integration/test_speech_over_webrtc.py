"""A real aiortc client receives the avatar: idle, speech in sync, back to idle."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from tests.audio_files import encode, speech_like
from tests.webrtc_client import ClientPeer, SenderTimeline, audio_envelope, edges

pytestmark = pytest.mark.webrtc

# Bursts of voice (seconds into the utterance), on the boundaries of generated frames.
BURSTS = [(0.40, 0.80), (1.20, 1.60), (2.00, 2.60)]
UTTERANCE_SECONDS = 3.2
LOUD_RMS = 0.05
OPEN_MOUTH = 0.08  # share of dark pixels in the mouth box of an open mouth
CLOSED_MOUTH = 0.03


async def create_session(http: httpx.AsyncClient, **params: object) -> dict:
    response = await http.post("/webrtc/sessions/create", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def upload(http: httpx.AsyncClient, session_id: str, data: bytes, name: str = "speech.wav") -> httpx.Response:
    return await http.post(
        f"/webrtc/sessions/{session_id}/stream", files={"audio_file": (name, data, "application/octet-stream")}
    )


async def wait_until(predicate, timeout: float, step: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(step)


@pytest.mark.parametrize(("fps", "playback_fps"), [(10, 15), (25, 25)])
async def test_idle_then_speech_in_sync_then_idle(http: httpx.AsyncClient, fps: int, playback_fps: int) -> None:
    frame = 1 / playback_fps
    session = await create_session(http, fps=fps, playback_fps=playback_fps)
    assert session["ice_servers"] == []
    peer = ClientPeer(http, session["session_id"])
    try:
        await peer.connect()
        await asyncio.sleep(2.0)
        idle_video = list(peer.received.video)
        idle_audio = list(peer.received.audio)

        speech = speech_like(UTTERANCE_SECONDS, bursts=BURSTS)
        response = await upload(http, session["session_id"], encode(speech, "wav"))
        assert response.status_code == 200, response.text
        accepted = response.json()
        assert accepted["duration_seconds"] == pytest.approx(UTTERANCE_SECONDS, abs=0.01)

        second = await upload(http, session["session_id"], encode(speech, "wav"))
        assert second.status_code == 409
        assert "speaking" in second.json()["detail"]
        assert second.json()["retry_after_seconds"] > 0
        assert int(second.headers["Retry-After"]) >= 1

        started = await peer.wait_for_event("speaking_started", timeout=5)
        ended = await peer.wait_for_event("speaking_ended", timeout=UTTERANCE_SECONDS + 5)
        assert ended["media_time"] - started["media_time"] == pytest.approx(UTTERANCE_SECONDS, abs=0.05)
        await asyncio.sleep(1.5)
        info = (await http.get(f"/webrtc/sessions/{session['session_id']}")).json()
        assert info["state"] == "idle"
        assert info["sync"]["utterances_finished"] == 1
        # The video's frame grid moved to the speech's start (unless it fell on it).
        grid_moves = info["media"]["video_grid_moves"]
        assert grid_moves <= 1
        # At fps below playback_fps a rendered picture shows for more than one frame: the
        # frames after its first are VP8 repeat frames (about a third at 10 / 15), not
        # encoded again; the pictures checked below are those the receiver decoded.
        repeated = info["media"]["video_frames_repeated"]
        speech_frames = UTTERANCE_SECONDS * playback_fps
        if fps < playback_fps:
            assert repeated == pytest.approx(speech_frames * (1 - fps / playback_fps), rel=0.1)
        else:
            assert repeated == 0
    finally:
        await peer.close()

    received = peer.received
    # When each frame's packets came in, as the benchmarks time arrivals: before aiortc
    # hands the frame over, a video frame when the next one's first packet is in (a
    # playback frame later), audio 4 packets (80 ms) later.
    video_in = [v for v in received.video if v.packets_in is not None]
    audio_in = [a for a in received.audio if a.packets_in is not None]
    assert len(video_in) >= len(received.video) - 2 and len(audio_in) >= len(received.audio) - 2
    assert all(v.packets_in <= v.arrival for v in video_in)
    assert all(a.packets_in <= a.arrival for a in audio_in)
    assert np.median([v.arrival - v.packets_in for v in video_in]) == pytest.approx(frame, abs=0.4 * frame)
    assert np.median([a.arrival - a.packets_in for a in audio_in]) == pytest.approx(0.08, abs=0.03)

    # Idle: the picture keeps changing (sway, blinks), the mouth is closed, audio is silent.
    thumbnails = np.stack([v.thumbnail for v in idle_video[5:]])
    assert np.abs(thumbnails - thumbnails[0]).max(axis=(1, 2)).max() > 10
    assert max(v.mouth_dark for v in idle_video) < CLOSED_MOUTH
    idle_pcm = np.concatenate([a.samples for a in idle_audio])
    assert len(idle_pcm) > 48_000
    assert np.abs(idle_pcm).max() < 1e-3

    # Speech on the sender's clock, as the receiver's lip sync sees it.
    timeline = SenderTimeline(received)
    times, rms = audio_envelope(received, timeline)
    sound_on, sound_off = edges(times, rms > LOUD_RMS)
    assert len(sound_on) == len(BURSTS), sound_on
    video_times = np.array([timeline.video_time(v.pts) for v in received.video])
    mouth = np.array([v.mouth_dark for v in received.video])
    mouth_on, mouth_off = edges(video_times, mouth > OPEN_MOUTH)
    assert len(mouth_on) == len(BURSTS), (mouth_on, sound_on)
    # The received audio carries the uploaded bursts, at their spacing.
    np.testing.assert_allclose(np.diff(sound_on), np.diff([b[0] for b in BURSTS]), atol=0.01)
    # The mouth opens and closes with the sound. The bursts' edges fall on the playback
    # frames counted from the speech's start, and the video's frames are sent from the
    # speech's first sample on: each edge is seen with its sound (within the few ms the
    # sender reports' two timelines and the 5 ms envelope allow), not up to a frame off.
    for opened, heard in zip(mouth_on, sound_on):
        assert abs(opened - heard) <= 0.02, (mouth_on, sound_on, grid_moves)
    for closed, quiet in zip(mouth_off, sound_off):
        assert abs(closed - quiet) <= 0.02, (mouth_off, sound_off, grid_moves)

    # While the sound is loud the mouth is open; between bursts it rests.
    for start, end in zip(sound_on, sound_off):
        inside = mouth[(video_times > start + frame) & (video_times < end - frame)]
        assert len(inside) >= 3 and inside.min() > OPEN_MOUTH
    for end, start in zip(sound_off[:-1], sound_on[1:]):
        between = mouth[(video_times > end + frame) & (video_times < start - frame)]
        assert len(between) >= 3 and between.max() < CLOSED_MOUTH

    # Back to idle afterwards: mouth closed, silence, the picture still moving.
    after = [v for v, t in zip(received.video, video_times) if t > sound_off[-1] + 3 * frame]
    assert len(after) >= 15
    assert max(v.mouth_dark for v in after) < CLOSED_MOUTH
    after_thumbs = np.stack([v.thumbnail for v in after])
    assert np.abs(after_thumbs - after_thumbs[0]).max() > 3
    tail = rms[times > sound_off[-1] + 0.05]
    assert len(tail) > 100 and tail.max() < 1e-3


async def test_long_speech_starts_before_it_is_all_rendered_and_renders_ahead_by_a_chunk(
    http: httpx.AsyncClient,
) -> None:
    session = await create_session(http, fps=10, playback_fps=15, chunk_duration=1.0)
    sid = session["session_id"]
    peer = ClientPeer(http, sid)
    try:
        await peer.connect()
        response = await upload(http, sid, encode(speech_like(8.0), "wav"))
        assert response.status_code == 200
        assert response.json()["chunk_count"] == 8
        await peer.wait_for_event("speaking_started", timeout=5)
        at_start = (await http.get(f"/webrtc/sessions/{sid}")).json()["utterance"]
        assert at_start["frames_rendered"] < at_start["frame_count"] / 2
        await asyncio.sleep(2.0)
        later = (await http.get(f"/webrtc/sessions/{sid}")).json()["utterance"]
        played_frames = later["position_seconds"] * 10
        # Chunk k starts rendering once chunk k-1 plays: at most two chunks ahead.
        assert later["frames_rendered"] <= (played_frames // 10 + 2) * 10
        assert later["frames_rendered"] > played_frames
        await peer.wait_for_event("speaking_ended", timeout=10)
    finally:
        await peer.close()
