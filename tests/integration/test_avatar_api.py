"""The avatar API: uploads become avatars in the background; bad videos get clear refusals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.avatars.preparation import PreparationRequest
from tests.avatar_files import audio_only_file, face_video, faceless_video, two_faces_video
from tests.conftest import make_settings, running_app

MAX_UPLOAD_BYTES = 1_000_000
LIMITS = {
    "avatar_min_video_seconds": 1.0,
    "avatar_max_video_seconds": 3.0,
    "avatar_max_frame_side": 640,
    "avatar_max_upload_bytes": MAX_UPLOAD_BYTES,
}


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_settings(avatars_dir=tmp_path / "avatars", **LIMITS)) as client:
        yield client


def avatars_dir(http: httpx.AsyncClient) -> Path:
    return http.app.state.server.settings.avatars_dir


async def upload(
    http: httpx.AsyncClient, video: Path | bytes, avatar_id: str = "alice", **fields: str
) -> httpx.Response:
    data = video.read_bytes() if isinstance(video, Path) else video
    return await http.post(
        "/avatars",
        data={"avatar_id": avatar_id, **fields},
        files={"video_file": ("alice.mp4", data, "video/mp4")},
    )


async def until_finished(
    http: httpx.AsyncClient, avatar_id: str, timeout: float = 60
) -> tuple[dict[str, Any], list[float]]:
    """The avatar once ready or failed, and every progress figure seen on the way."""
    seen = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        info = (await http.get(f"/avatars/{avatar_id}")).json()
        seen.append(info["progress"])
        if info["state"] in ("ready", "failed"):
            return info, seen
        await asyncio.sleep(0.02)
    raise TimeoutError(f"avatar {avatar_id} still {info['state']}")


async def test_an_upload_is_prepared_in_the_background_listed_used_and_deleted(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    response = await upload(http, face_video(tmp_path / "alice.mp4", 2.0, size=256))
    assert response.status_code == 202, response.text
    assert response.headers["location"] == "/avatars/alice"
    assert response.json()["state"] in ("queued", "running")
    info, progress = await until_finished(http, "alice")
    assert info["state"] == "ready" and info["progress"] == 1.0, info
    assert progress == sorted(progress) and any(0 < p < 1 for p in progress)
    assert info["job"]["state"] == "done" and info["job"]["reused"] is False
    prepared = info["prepared"]
    assert (prepared["frame_count"], prepared["fps"], prepared["width"]) == (50, 25.0, 256)
    assert prepared["source_name"] == "alice.mp4" and prepared["landmarks"] == "mediapipe-face-mesh"
    assert prepared["face_parsing"] == "feathered" and prepared["latents"] == []

    listed = {a["avatar_id"]: a for a in (await http.get("/avatars")).json()["avatars"]}
    assert set(listed) == {"alice", "demo"}
    assert listed["demo"]["built_in"] and listed["demo"]["state"] == "ready"

    session = (await http.post("/webrtc/sessions/create", params={"avatar_id": "alice"})).json()
    assert (await http.get("/avatars/alice")).json()["sessions"] == 1
    refused = await http.delete("/avatars/alice")
    assert refused.status_code == 409
    assert "in use by 1 session(s)" in refused.json()["detail"]
    await http.delete(f"/webrtc/sessions/{session['session_id']}")
    deleted = await http.delete("/avatars/alice")
    assert deleted.status_code == 200 and deleted.json() == {"avatar_id": "alice", "state": "deleted"}
    assert (await http.get("/avatars/alice")).status_code == 404
    assert not (avatars_dir(http) / "alice").exists()
    assert [a["avatar_id"] for a in (await http.get("/avatars")).json()["avatars"]] == ["demo"]

    builtin = await http.delete("/avatars/demo")
    assert builtin.status_code == 403 and "built-in" in builtin.json()["detail"]


async def test_two_sessions_on_one_avatar_share_one_copy_in_memory(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    server = http.app.state.server
    video = face_video(tmp_path / "bob.mp4", 1.2, size=256)
    await asyncio.to_thread(server.preparer.prepare, PreparationRequest(video, "bob"))
    ids = [
        (await http.post("/webrtc/sessions/create", params={"avatar_id": "bob"})).json()["session_id"]
        for _ in range(2)
    ]
    first, second = (server.sessions.get(sid).avatar for sid in ids)
    assert first is second
    assert first.avatar.frames is second.avatar.frames and first.engine_state is second.engine_state
    assert server.avatars.users("bob") == 2
    for sid in ids:
        await http.delete(f"/webrtc/sessions/{sid}")
    assert server.avatars.users("bob") == 0
    # Kept in memory once loaded: a later session gets the same copy.
    later = (await http.post("/webrtc/sessions/create", params={"avatar_id": "bob"})).json()["session_id"]
    assert server.sessions.get(later).avatar is first


async def test_bad_videos_and_forms_are_refused_with_the_reason(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    face = face_video(tmp_path / "face.mp4", 1.2, size=256)
    cases = [
        (400, "could not be read as a video", {"video": b"not a video at all " * 100}),
        (415, "no video stream (found: audio)", {"video": audio_only_file(tmp_path / "speech.m4a")}),
        (413, "4.0 s long; at most 3 s", {"video": face_video(tmp_path / "long.mp4", 4.0, size=64)}),
        (413, f"limit of {MAX_UPLOAD_BYTES} bytes", {"video": b"\0" * (MAX_UPLOAD_BYTES + 1)}),
        (413, "704x704; their longest side may be at most 640", {"video": face_video(tmp_path / "large.mp4", 1.2, size=704)}),
        (422, "0.4 s long; at least 1 s", {"video": face_video(tmp_path / "short.mp4", 0.4, size=64)}),
        (422, "Invalid avatar id", {"video": face, "avatar_id": "../etc"}),
        (403, "built-in avatar's id", {"video": face, "avatar_id": "demo"}),
        (422, "'bbox' is invalid", {"video": face, "bbox": "10,20,30"}),
        (422, "'force' must be true or false", {"video": face, "force": "maybe"}),
        (422, "bbox_shift applies to MuseTalk 1.0 only", {"video": face, "bbox_shift": "5"}),
        (422, "'bbox_shift' must be a whole number", {"video": face, "bbox_shift": "up"}),
        (422, "version must be one of 1.5, 1.0", {"video": face, "musetalk_version": "2"}),
    ]
    for status, words, kwargs in cases:
        response = await upload(http, **kwargs)
        assert response.status_code == status, (words, response.text)
        assert words in response.json()["detail"], response.text
    no_file = await http.post("/avatars", data={"avatar_id": "x"}, files={"other": ("a", b"x", "text/plain")})
    assert no_file.status_code == 422 and "no field 'video_file'" in no_file.json()["detail"]
    no_id = await http.post("/avatars", files={"video_file": ("a.mp4", face.read_bytes(), "video/mp4")})
    assert no_id.status_code == 422 and "no field 'avatar_id'" in no_id.json()["detail"]
    not_multipart = await http.post("/avatars", json={"avatar_id": "x"})
    assert not_multipart.status_code == 415
    # Nothing was kept: no avatar, no uploaded file, no preparation started.
    assert list(avatars_dir(http).iterdir()) == []
    assert [a["avatar_id"] for a in (await http.get("/avatars")).json()["avatars"]] == ["demo"]


async def test_a_video_without_a_face_fails_in_its_job_and_leaves_nothing(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    response = await upload(http, faceless_video(tmp_path / "wall.mp4", 1.2, faces_in=range(0, 30, 10)))
    assert response.status_code == 202, response.text
    info, _ = await until_finished(http, "alice")
    assert info["state"] == "failed" and info["job"]["error_status"] == 422
    assert "No face was found in 27 of the video's 30 frames (90%" in info["error"]
    assert "frames 1-9, 11-19, 21-29" in info["error"]
    assert info["prepared"] is None
    assert list(avatars_dir(http).iterdir()) == []
    assert [a["state"] for a in (await http.get("/avatars")).json()["avatars"]] == ["failed", "ready"]
    assert (await http.delete("/avatars/alice")).status_code == 200  # forgets the failure
    assert (await http.get("/avatars/alice")).status_code == 404


async def test_with_several_faces_the_largest_is_used_and_the_avatar_says_so(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    assert (await upload(http, two_faces_video(tmp_path / "two.mp4", 1.2))).status_code == 202
    info, _ = await until_finished(http, "alice")
    assert info["state"] == "ready", info
    assert info["prepared"]["warnings"] == [
        "Frames 0-29 (30 of 30) show more than one face; the largest face in each was used."
    ]
    boxes = http.app.state.server.avatars.metadata("alice")["face_boxes"]
    assert all(x2 < 340 for _, _, x2, _ in boxes)  # the large face on the left


async def test_the_same_video_again_is_a_no_op_another_needs_force(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    video = face_video(tmp_path / "alice.mp4", 1.2, size=256)
    assert (await upload(http, video)).status_code == 202
    busy = await upload(http, video)
    assert busy.status_code == 409 and "being prepared already" in busy.json()["detail"]
    assert (await http.delete("/avatars/alice")).status_code == 409
    first, _ = await until_finished(http, "alice")

    assert (await upload(http, video)).status_code == 202
    again, _ = await until_finished(http, "alice")
    assert again["job"]["reused"] is True
    assert again["prepared"]["prepared_at"] == first["prepared"]["prepared_at"]

    other = face_video(tmp_path / "other.mp4", 1.6, size=256)
    conflict = await upload(http, other)
    assert conflict.status_code == 409 and "prepared from another video" in conflict.json()["detail"]
    assert (await upload(http, other, force="true")).status_code == 202
    replaced, _ = await until_finished(http, "alice")
    assert replaced["state"] == "ready" and replaced["prepared"]["frame_count"] == 40


async def test_with_musetalk_an_upload_gets_its_latents_before_it_is_ready(
    tiny_models: Path, tmp_path: Path
) -> None:
    settings = make_settings(
        avatars_dir=tmp_path / "avatars", models_dir=tiny_models, lipsync_engine="musetalk",
        lipsync_device="cpu", **LIMITS,
    )
    async with running_app(settings) as client:
        response = await upload(client, face_video(tmp_path / "alice.mp4", 1.2, size=256))
        assert response.status_code == 202, response.text
        info, _ = await until_finished(client, "alice")
        assert info["state"] == "ready", info
        [latents] = info["prepared"]["latents"]
        assert latents.startswith("musetalk/vae-")


async def test_an_avatar_prepared_for_the_other_musetalk_version_is_refused_with_what_to_do(
    tiny_models: Path, tmp_path: Path
) -> None:
    settings = make_settings(
        avatars_dir=tmp_path / "avatars", models_dir=tiny_models, lipsync_engine="musetalk",
        lipsync_device="cpu", **LIMITS,
    )
    async with running_app(settings) as client:  # runs MuseTalk 1.5 (auto)
        video = face_video(tmp_path / "alice.mp4", 1.2, size=256)
        response = await upload(client, video, musetalk_version="1.0", bbox_shift="-4")
        assert response.status_code == 202, response.text
        info, _ = await until_finished(client, "alice")
        assert info["state"] == "ready", info
        assert (info["prepared"]["musetalk_version"], info["prepared"]["bbox_shift"]) == ("1.0", -4)
        refused = await client.post("/webrtc/sessions/create", params={"avatar_id": "alice"})
        assert refused.status_code == 409, refused.text
        assert "prepared for MuseTalk 1.0, but this server runs MuseTalk 1.5" in refused.json()["detail"]
        assert (await upload(client, video, force="true")).status_code == 202  # for the server's version
        info, _ = await until_finished(client, "alice")
        assert info["prepared"]["musetalk_version"] == "1.5"
        created = await client.post("/webrtc/sessions/create", params={"avatar_id": "alice"})
        assert created.status_code == 200, created.text
