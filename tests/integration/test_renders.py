"""`POST /renders`: speech rendered into an MP4 file in the background, decoded back here."""

from __future__ import annotations

import asyncio
import io
import math
import shutil
import time
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest

from tests.audio_files import encode, speech_like
from tests.conftest import make_settings, running_app

WAV_SECONDS = 1.5
# Sound, then silences long enough for the mouth to close (the demo engine's window
# reaches about 0.15 s around each frame).
BURSTS = [(0.0, 0.3), (0.75, 1.05)]
RENDER_TIMEOUT_SECONDS = 60.0
POLL_SECONDS = 0.1
CHANGE_LEVEL = 48
"""A pixel this far from the idle frame's (of 255) was drawn, not H.264's rounding."""
SPEAKING_PIXELS = 3000
"""An open mouth changes ~6000 pixels of the demo face; the closed mouth it draws in
silence, a line where the idle frame has its own, under 1000."""
AUDIO_DURATION_TOLERANCE = 0.03
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def wav(seconds: float = WAV_SECONDS) -> bytes:
    return encode(speech_like(seconds, bursts=[b for b in BURSTS if b[0] < seconds]), "wav")


async def post_audio(http: httpx.AsyncClient, data: bytes, **fields: str) -> httpx.Response:
    return await http.post("/renders", files={"audio_file": ("speech.wav", data)}, data=fields)


async def finished(http: httpx.AsyncClient, render_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + RENDER_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        info = (await http.get(f"/renders/{render_id}")).json()
        if info["state"] in ("done", "failed"):
            return info
        await asyncio.sleep(POLL_SECONDS)
    raise AssertionError(f"render {render_id} did not finish in {RENDER_TIMEOUT_SECONDS} s")


async def rendered(http: httpx.AsyncClient, response: httpx.Response) -> tuple[dict[str, Any], bytes]:
    assert response.status_code == 202, response.text
    render_id = response.json()["render_id"]
    assert response.headers["location"] == f"/renders/{render_id}"
    info = await finished(http, render_id)
    assert info["state"] == "done", info
    video = await http.get(info["video_url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    return info, video.content


def decoded(mp4: bytes) -> tuple[dict[str, Any], list[np.ndarray], np.ndarray]:
    """(stream facts, RGB frames, audio samples) of an MP4 file."""
    with av.open(io.BytesIO(mp4)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        facts = {
            "video_codec": video.codec_context.name,
            "fps": float(video.average_rate),
            "audio_codec": audio.codec_context.name,
            "sample_rate": audio.sample_rate,
        }
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    with av.open(io.BytesIO(mp4)) as container:
        samples = np.concatenate(
            [frame.to_ndarray().mean(axis=0) for frame in container.decode(audio=0)]
        )
    return facts, frames, samples


async def idle_frames(http: httpx.AsyncClient, count: int) -> list[np.ndarray]:
    """The avatar frames a clip of `count` frames animates: its ping-pong cycle from frame 0."""
    store = http.app.state.server.avatars  # type: ignore[attr-defined]
    avatar = (await store.acquire("demo")).avatar
    store.release("demo")
    return [avatar.frames[avatar.cycle[j % len(avatar.cycle)]] for j in range(count)]


def changed_pixels(frames: list[np.ndarray], idle: list[np.ndarray]) -> list[int]:
    """Per frame, the pixels that differ from the idle frame beyond coding noise."""
    return [
        int((np.abs(frame.astype(np.int16) - still.astype(np.int16)).max(axis=-1) > CHANGE_LEVEL).sum())
        for frame, still in zip(frames, idle, strict=True)
    ]


async def test_a_rendered_wav_is_h264_at_its_fps_and_aac_of_its_duration(
    http: httpx.AsyncClient,
) -> None:
    info, mp4 = await rendered(http, await post_audio(http, wav(), avatar_id="demo"))
    facts, frames, samples = decoded(mp4)
    assert info["progress"] == 1.0 and info["source"] == "audio"
    assert info["duration_seconds"] == pytest.approx(WAV_SECONDS, abs=0.001)
    assert facts["video_codec"] == "h264" and facts["fps"] == 25
    assert len(frames) == info["frame_count"] == math.ceil(WAV_SECONDS * 25)
    assert facts["audio_codec"] == "aac" and facts["sample_rate"] == 48_000
    assert len(samples) / 48_000 == pytest.approx(WAV_SECONDS, abs=AUDIO_DURATION_TOLERANCE)
    loud = np.sqrt(np.mean(samples[: int(0.3 * 48_000)] ** 2))
    assert loud > 0.1, "the speech is not in the audio track"


async def test_the_mouth_opens_in_the_sound_and_closes_in_the_silence(
    http: httpx.AsyncClient,
) -> None:
    _, mp4 = await rendered(http, await post_audio(http, wav(), fps="10"))
    _, frames, _ = decoded(mp4)
    changed = changed_pixels(frames, await idle_frames(http, len(frames)))
    # At 10 fps frame j shows [j/10, (j+1)/10): frames 1, 8 and 9 are inside bursts,
    # 5, 13 and 14 inside silences, where the clip is the idle loop from its frame 0.
    speaking = [changed[1], changed[8], changed[9]]
    silent = [changed[5], changed[13], changed[14]]
    assert min(speaking) > SPEAKING_PIXELS, changed
    assert max(silent) < SPEAKING_PIXELS / 2, changed


@needs_espeak
async def test_a_rendered_text_is_its_speech_at_the_fps_asked(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/renders", json={"avatar_id": "demo", "text": "Hello, I am the avatar.", "fps": 12}
    )
    info, mp4 = await rendered(http, response)
    facts, frames, samples = decoded(mp4)
    assert info["source"] == "text" and info["progress"] == 1.0
    assert 0.8 < info["duration_seconds"] < 5
    assert facts["fps"] == 12 and facts["video_codec"] == "h264"
    assert len(frames) == info["frame_count"] == math.ceil(info["duration_seconds"] * 12 - 1e-9)
    assert len(samples) / 48_000 == pytest.approx(info["duration_seconds"], abs=AUDIO_DURATION_TOLERANCE)
    changed = changed_pixels(frames, await idle_frames(http, len(frames)))
    assert sum(count > SPEAKING_PIXELS for count in changed) > len(frames) / 3, changed


async def test_deleting_a_render_removes_its_file(http: httpx.AsyncClient) -> None:
    info, _ = await rendered(http, await post_audio(http, wav(0.5)))
    folder: Path = http.app.state.server.settings.renders_dir  # type: ignore[attr-defined]
    path = folder / f"{info['render_id']}.mp4"
    assert path.is_file()
    deleted = await http.delete(f"/renders/{info['render_id']}")
    assert deleted.status_code == 200 and deleted.json() == {"render_id": info["render_id"], "deleted": True}
    assert not path.exists()
    assert (await http.get(f"/renders/{info['render_id']}")).status_code == 404
    assert (await http.get(info["video_url"])).status_code == 404
    assert (await http.delete(f"/renders/{info['render_id']}")).status_code == 404


async def test_deleting_a_running_render_stops_it_and_leaves_no_file(http: httpx.AsyncClient) -> None:
    response = await post_audio(http, wav(20.0))
    render_id = response.json()["render_id"]
    deadline = time.monotonic() + RENDER_TIMEOUT_SECONDS
    while (await http.get(f"/renders/{render_id}")).json()["progress"] == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(POLL_SECONDS / 5)
    assert (await http.get(f"/renders/{render_id}/video")).status_code == 409
    assert (await http.delete(f"/renders/{render_id}")).status_code == 200
    folder: Path = http.app.state.server.settings.renders_dir  # type: ignore[attr-defined]
    assert list(folder.iterdir()) == []


async def test_a_finished_render_expires_with_its_file_after_the_ttl() -> None:
    async with running_app(make_settings(renders_ttl_seconds=1.0)) as http:
        info, _ = await rendered(http, await post_audio(http, wav(0.5)))
        folder: Path = http.app.state.server.settings.renders_dir  # type: ignore[attr-defined]
        await asyncio.sleep(2.5)
        assert (await http.get(f"/renders/{info['render_id']}")).status_code == 404
        assert list(folder.iterdir()) == []


async def test_renders_past_the_limit_are_refused_while_none_has_finished() -> None:
    async with running_app(make_settings(renders_max_jobs=1)) as http:
        first = await post_audio(http, wav(20.0))
        assert first.status_code == 202
        second = await post_audio(http, wav(0.5))
        assert second.status_code == 429, second.text
        assert "RENDERS_MAX_JOBS" in second.json()["detail"] and "retry-after" in second.headers
        await http.delete(f"/renders/{first.json()['render_id']}")
        assert (await post_audio(http, wav(0.5))).status_code == 202


async def test_a_finished_render_makes_room_for_a_new_one_past_the_limit() -> None:
    async with running_app(make_settings(renders_max_jobs=1)) as http:
        info, _ = await rendered(http, await post_audio(http, wav(0.5)))
        assert (await post_audio(http, wav(0.5))).status_code == 202
        assert (await http.get(f"/renders/{info['render_id']}")).status_code == 404


@pytest.mark.parametrize(
    ("request_args", "status"),
    [
        ({"files": {"audio_file": ("a.wav", b"not audio at all" * 100)}}, 415),
        ({"files": {"audio_file": ("a.wav", b"")}}, 400),
        ({"files": {"other": ("a.wav", b"RIFF")}}, 422),
        ({"files": {"audio_file": ("a.wav", b"RIFF")}, "data": {"avatar_id": "nobody"}}, 404),
        ({"files": {"audio_file": ("a.wav", b"RIFF")}, "data": {"fps": "0"}}, 422),
        ({"files": {"audio_file": ("a.wav", b"RIFF")}, "data": {"avatar_id": "../x"}}, 422),
        ({"json": {"text": ""}}, 422),
        ({"json": {"text": "hello", "fps": 61}}, 422),
        ({"json": {"text": "hello", "avatar_id": "nobody"}}, 404),
        ({"json": ["hello"]}, 422),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415),
    ],
)
async def test_bad_requests_are_refused_with_what_to_fix(
    http: httpx.AsyncClient, request_args: dict[str, Any], status: int
) -> None:
    response = await http.post("/renders", **request_args)
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    assert len(http.app.state.server.renders) == 0  # type: ignore[attr-defined]


async def test_renders_need_an_api_key_when_the_server_has_keys() -> None:
    key = "k" * 32
    async with running_app(make_settings(api_keys=(key,))) as http:
        assert (await post_audio(http, wav(0.5))).status_code == 401
        assert (await http.get("/renders/r0")).status_code == 401
        accepted = await http.post(
            "/renders", files={"audio_file": ("a.wav", wav(0.5))},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert accepted.status_code == 202
