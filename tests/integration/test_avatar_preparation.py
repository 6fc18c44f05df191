"""A video of a face becomes a prepared avatar on disk, which sessions then speak with."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from server.avatars.errors import VideoError
from server.avatars.face_box import crop_face
from server.avatars.preparation import PreparationRequest, Preparer, file_sha256
from server.avatars.storage import (
    FORMAT_VERSION,
    load_prepared,
    prepared_ids,
    read_lossless_video,
    stored_latents,
)
from server.avatars.video import VideoLimits, read_frames
from server.cli import main
from server.lipsync.musetalk.tiny_weights import write_tiny_weights
from server.lipsync.demo.face import DEMO_AVATAR_ID
from tests.audio_files import encode, speech_like
from tests.avatar_files import (
    DWPOSE_FACE_BOX,
    face_video,
    faceless_video,
    tiny_dwpose_model,
    tiny_face_parsing_weights,
)
from tests.conftest import make_settings, running_app
from tests.webrtc_client import ClientPeer

AVATAR_ID = "drawn-person"
VIDEO_SECONDS = 2.0  # 50 frames at 25 fps
OPEN_MOUTH = 0.08
CLOSED_MOUTH = 0.03
FILES = {"avatar.json", "frames.mkv", "crops.mkv", "masks.mkv", "landmarks.npy"}
LATENTS = "latents"  # written by the CLI when MuseTalk's VAE is in MODELS_DIR


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """An avatar prepared by the CLI from a video of the drawn face, with tiny random
    face-parsing and MuseTalk weights: (AVATARS_DIR, MODELS_DIR, what the CLI printed)."""
    root = tmp_path_factory.mktemp("prepared")
    avatars, models = root / "avatars", root / "models"
    tiny_face_parsing_weights(models)
    write_tiny_weights(models, versions=("1.5",))
    video = face_video(root / "person.mp4", VIDEO_SECONDS)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AVATARS_DIR", str(avatars))
        env.setenv("MODELS_DIR", str(models))
        env.setenv("AVATAR_MIN_VIDEO_SECONDS", "1")
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            assert main(["prepare-avatar", str(video), "--avatar-id", AVATAR_ID]) == 0
    return avatars, models, output.getvalue()


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An empty AVATARS_DIR and MODELS_DIR (feathered masks) for the CLI and the preparer."""
    avatars, models = tmp_path / "avatars", tmp_path / "models"
    monkeypatch.setenv("AVATARS_DIR", str(avatars))
    monkeypatch.setenv("MODELS_DIR", str(models))
    monkeypatch.setenv("AVATAR_MIN_VIDEO_SECONDS", "1")
    return avatars, models


def preparer(avatars: Path, models: Path) -> Preparer:
    return Preparer(avatars, models, VideoLimits(1.0, 60.0, 1920), max_faceless_share=0.1)


@pytest.mark.webrtc
async def test_an_avatar_prepared_from_a_video_speaks_in_a_session(prepared: tuple[Path, Path, str]) -> None:
    avatars, models, printed = prepared
    assert f"Avatar {AVATAR_ID} prepared in {avatars / AVATAR_ID}: 50 frames (2.0 s)" in printed
    settings = make_settings(avatars_dir=avatars, models_dir=models)
    async with running_app(settings) as http:
        assert AVATAR_ID in (await http.get("/health")).json()["avatars"]
        session = (await http.post("/webrtc/sessions/create", params={"avatar_id": AVATAR_ID})).json()
        peer = ClientPeer(http, session["session_id"])
        try:
            await peer.connect()
            response = await http.post(
                f"/webrtc/sessions/{session['session_id']}/stream",
                files={"audio_file": ("s.wav", encode(speech_like(1.6), "wav"), "audio/wav")},
            )
            assert response.status_code == 200, response.text
            await peer.wait_for_event("speaking_started", timeout=5)
            await peer.wait_for_event("speaking_ended", timeout=5)
        finally:
            await peer.close()
    mouths = [v.mouth_dark for v in peer.received.video]
    assert min(mouths) < CLOSED_MOUTH and max(mouths) > OPEN_MOUTH


@pytest.mark.webrtc
async def test_a_prepared_avatar_speaks_with_musetalk_from_its_stored_latents(tmp_path: Path) -> None:
    # No face-parsing weights: the feathered lower-face masks show the generated face
    # (tiny random parsing weights would mark no face to blend at all).
    avatars, models = tmp_path / "avatars", tmp_path / "models"
    write_tiny_weights(models, versions=("1.5",))
    video = face_video(tmp_path / "person.mp4", 1.2)
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as env, contextlib.redirect_stdout(printed):
        env.setenv("AVATARS_DIR", str(avatars))
        env.setenv("MODELS_DIR", str(models))
        env.setenv("AVATAR_MIN_VIDEO_SECONDS", "1")
        assert main(["prepare-avatar", str(video), "--avatar-id", AVATAR_ID]) == 0
    assert "Latents: 30 frames encoded" in printed.getvalue()
    folder = avatars / AVATAR_ID
    [latents_file] = (folder / LATENTS).glob("*/*.npz")
    written = latents_file.stat().st_mtime_ns
    settings = make_settings(
        avatars_dir=avatars, models_dir=models, lipsync_engine="musetalk", lipsync_device="cpu"
    )
    async with running_app(settings) as http:
        session = (await http.post("/webrtc/sessions/create", params={"avatar_id": AVATAR_ID})).json()
        peer = ClientPeer(http, session["session_id"], keep_images=True)
        try:
            await peer.connect()
            await asyncio.sleep(1.0)
            idle = len(peer.received.video)
            response = await http.post(
                f"/webrtc/sessions/{session['session_id']}/stream",
                files={"audio_file": ("s.wav", encode(speech_like(1.6), "wav"), "audio/wav")},
            )
            assert response.status_code == 200, response.text
            await peer.wait_for_event("speaking_ended", timeout=60)
        finally:
            await peer.close()
    assert latents_file.stat().st_mtime_ns == written  # read back, not encoded again
    # Random weights: the regenerated lower face matches none of the avatar's own frames.
    frames = load_prepared(folder).frames[:, 300:400, 180:330].astype(np.float32)
    distances = [
        float(np.abs(frames - v.image[300:400, 180:330]).mean(axis=(1, 2, 3)).min())
        for v in peer.received.video
    ]
    assert max(distances[:idle]) < 6 and max(distances[idle:]) > 15, distances


def test_the_prepared_files_match_the_format(prepared: tuple[Path, Path, str]) -> None:
    avatars, _, _ = prepared
    folder = avatars / AVATAR_ID
    assert {p.name for p in folder.iterdir()} == FILES | {LATENTS}
    assert prepared_ids(avatars) == [AVATAR_ID]
    assert [p.name for p in avatars.iterdir()] == [AVATAR_ID]  # no staging folder left

    metadata = json.loads((folder / "avatar.json").read_text())
    video = avatars.parent / "person.mp4"
    assert metadata["format_version"] == FORMAT_VERSION
    assert metadata["source"]["sha256"] == file_sha256(video)
    assert metadata["source"]["name"] == "person.mp4"
    assert (metadata["fps"], metadata["frame_count"]) == (25.0, 50)
    assert (metadata["width"], metadata["height"]) == (512, 512)
    assert metadata["recipe"]["landmarks"] == "mediapipe-face-mesh"
    assert metadata["recipe"]["face_parsing"].startswith("bisenet:")
    boxes = np.array(metadata["face_boxes"])
    squares = np.array(metadata["mask_boxes"])
    assert boxes.shape == squares.shape == (50, 4)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 512).all() and (boxes[:, 2:] > boxes[:, :2]).all()
    assert (squares[:, 2] - squares[:, 0] == squares[:, 3] - squares[:, 1]).all()

    source = np.stack(list(read_frames(video)))
    frames = read_lossless_video(folder / "frames.mkv", 50)
    np.testing.assert_array_equal(frames, source)  # stored losslessly, as decoded
    crops = read_lossless_video(folder / "crops.mkv", 50)
    np.testing.assert_array_equal(crops[7], crop_face(source[7], tuple(boxes[7])))
    assert np.load(folder / "landmarks.npy").shape == (50, 68, 2)

    avatar = load_prepared(folder)
    assert avatar.frames.shape == (50, 512, 512, 3) and avatar.crops.shape == (50, 256, 256, 3)
    for i in range(50):
        square, mask = avatar.blend_mask(i)
        side = square[2] - square[0]
        assert mask.shape == (side, side) and mask[: side // 3].max() == 0
    assert avatar.read_latents("musetalk", "v15") is None
    [stored] = stored_latents(folder)
    assert stored.startswith("musetalk/vae-")
    latents = avatar.read_latents(*stored.split("/"))["latents"]
    assert latents.shape == (50, 8, 32, 32) and latents.dtype == np.float32


def test_latents_are_stored_per_engine_version_and_dropped_with_a_new_preparation(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    avatars, models = folders
    video = face_video(tmp_path / "person.mp4", 1.2, size=256)
    preparer(avatars, models).prepare(PreparationRequest(video, AVATAR_ID))
    avatar = load_prepared(avatars / AVATAR_ID)
    latents = np.random.default_rng(0).standard_normal((30, 8, 32, 32)).astype(np.float16)
    path = avatar.write_latents("musetalk", "1.5-sd-vae-ft-mse", {"latents": latents})
    assert path == avatars / AVATAR_ID / "latents" / "musetalk" / "1.5-sd-vae-ft-mse.npz"
    np.testing.assert_array_equal(avatar.read_latents("musetalk", "1.5-sd-vae-ft-mse")["latents"], latents)
    assert avatar.read_latents("musetalk", "1.0-sd-vae-ft-mse") is None
    with pytest.raises(ValueError, match="version"):
        avatar.write_latents("musetalk", "../escape", {"latents": latents})

    preparer(avatars, models).prepare(PreparationRequest(video, AVATAR_ID, force=True))
    assert not (avatars / AVATAR_ID / "latents").exists()
    avatar.write_latents("musetalk", "1.5-sd-vae-ft-mse", {"latents": latents})  # a late write of the old one
    assert load_prepared(avatars / AVATAR_ID).read_latents("musetalk", "1.5-sd-vae-ft-mse") is None


def test_preparing_the_same_video_again_is_a_no_op_unless_forced(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    avatars, _ = folders
    video = face_video(tmp_path / "person.mp4", 1.2, size=256)
    assert main(["prepare-avatar", str(video), "--avatar-id", AVATAR_ID]) == 0
    first = json.loads((avatars / AVATAR_ID / "avatar.json").read_text())["preparation_id"]
    assert main(["prepare-avatar", str(video), "--avatar-id", AVATAR_ID]) == 0
    assert "already prepared from this video" in capsys.readouterr().out
    assert json.loads((avatars / AVATAR_ID / "avatar.json").read_text())["preparation_id"] == first
    assert main(["prepare-avatar", str(video), "--avatar-id", AVATAR_ID, "--force"]) == 0
    assert json.loads((avatars / AVATAR_ID / "avatar.json").read_text())["preparation_id"] != first

    other = face_video(tmp_path / "other.mp4", 1.6, size=256)
    assert main(["prepare-avatar", str(other), "--avatar-id", AVATAR_ID]) == 1
    assert "exists already, prepared from another video (person.mp4)" in capsys.readouterr().err


def test_cli_refuses_a_bad_video_with_the_reason(folders: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    avatars, _ = folders
    assert main(["prepare-avatar", str(faceless_video(tmp_path / "empty.mp4", 1.2)), "--avatar-id", "x"]) == 1
    assert "No face was found in 30 of the video's 30 frames" in capsys.readouterr().err
    assert main(["prepare-avatar", str(tmp_path / "missing.mp4"), "--avatar-id", "x"]) == 1
    assert "There is no file" in capsys.readouterr().err
    assert main(["prepare-avatar", str(tmp_path / "empty.mp4"), "--avatar-id", "demo"]) == 1
    assert "built-in avatar's id" in capsys.readouterr().err
    assert main(["prepare-avatar", str(tmp_path / "empty.mp4"), "--avatar-id", "x", "--bbox", "1,2"]) == 2
    assert not avatars.exists() or not any(avatars.iterdir())


def test_a_given_box_replaces_face_finding(folders: tuple[Path, Path], tmp_path: Path) -> None:
    avatars, models = folders
    video = faceless_video(tmp_path / "empty.mp4", 1.2)
    result = preparer(avatars, models).prepare(PreparationRequest(video, AVATAR_ID, bbox=(40, 50, 200, 230)))
    metadata = json.loads((result.directory / "avatar.json").read_text())
    assert metadata["recipe"]["landmarks"] == "bbox"
    assert metadata["face_boxes"] == [[40, 50, 200, 230]] * 30
    with pytest.raises(VideoError, match="does not fit in the 256x256 frames"):
        preparer(avatars, models).prepare(PreparationRequest(video, "other", bbox=(40, 50, 300, 230)))


def test_dwpose_weights_are_used_when_present(folders: tuple[Path, Path], tmp_path: Path) -> None:
    avatars, models = folders
    tiny_dwpose_model(models)
    video = face_video(tmp_path / "person.mp4", 1.2)
    result = preparer(avatars, models).prepare(PreparationRequest(video, AVATAR_ID))
    metadata = json.loads((result.directory / "avatar.json").read_text())
    assert metadata["recipe"]["landmarks"] == "dwpose"
    assert metadata["face_boxes"] == [list(DWPOSE_FACE_BOX)] * 30


def test_a_failed_preparation_leaves_nothing_and_keeps_the_older_avatar(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    avatars, models = folders
    prepare = preparer(avatars, models).prepare
    with pytest.raises(VideoError) as caught:
        prepare(PreparationRequest(faceless_video(tmp_path / "few.mp4", 1.2, faces_in=range(20)), "few"))
    assert caught.value.status == 422
    assert "No face was found in 10 of the video's 30 frames (33%; at most 10%" in caught.value.message
    assert "frames 20-29" in caught.value.message
    assert not avatars.exists() or list(avatars.iterdir()) == []

    video = face_video(tmp_path / "person.mp4", 1.2, size=256)
    prepare(PreparationRequest(video, AVATAR_ID))
    before = (avatars / AVATAR_ID / "avatar.json").read_text()

    def interrupt(share: float) -> None:
        if share > 0.7:  # well into writing the pictures
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        prepare(PreparationRequest(video, AVATAR_ID, force=True), interrupt)
    assert [p.name for p in avatars.iterdir()] == [AVATAR_ID]
    assert (avatars / AVATAR_ID / "avatar.json").read_text() == before


async def test_the_demo_avatar_is_prepared_once_then_loaded(tmp_path: Path) -> None:
    settings = make_settings(avatars_dir=tmp_path / "avatars")
    async with running_app(settings) as http:
        session = (await http.post("/webrtc/sessions/create")).json()
        assert session["avatar_id"] == DEMO_AVATAR_ID
        loaded = http.app.state.server.sessions.get(session["session_id"]).avatar.avatar
    metadata = json.loads((tmp_path / "avatars" / "demo" / "avatar.json").read_text())
    assert metadata["built_in"] is True and metadata["frame_count"] == 50
    assert metadata["recipe"]["face_parsing"] == "feathered"  # no weights in MODELS_DIR
    assert loaded.metadata["preparation_id"] == metadata["preparation_id"]

    async with running_app(settings) as http:
        await http.post("/webrtc/sessions/create")
        info = (await http.get("/avatars/demo")).json()
    assert info["built_in"] and info["prepared"]["frame_count"] == 50
    again = json.loads((tmp_path / "avatars" / "demo" / "avatar.json").read_text())
    assert again["preparation_id"] == metadata["preparation_id"]  # loaded, not prepared again


async def test_without_a_face_detector_the_demo_avatar_is_used_as_drawn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # as if it were not installed
    async with running_app(make_settings(avatars_dir=tmp_path / "avatars")) as http:
        response = await http.post("/webrtc/sessions/create")
        assert response.status_code == 200, response.text
    assert "the demo avatar is used as drawn, unprepared" in caplog.text
    assert not (tmp_path / "avatars" / "demo").exists()


def test_an_avatar_prepared_for_1_0_gets_its_recipe_and_bbox_shift(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    # The DWPose stand-in's face: x 127..387, chin 407, nose ridge 247. MuseTalk 1.0 adds no
    # margin; bbox_shift -20 puts the centre at 227, so the top is 227 - (407 - 227) = 47.
    avatars, models = folders
    tiny_dwpose_model(models)
    video = face_video(tmp_path / "person.mp4", 1.2)
    argv = ["prepare-avatar", str(video), "--avatar-id", AVATAR_ID, "--musetalk-version", "1.0"]
    assert main([*argv, "--bbox-shift", "-20"]) == 0
    metadata = json.loads((avatars / AVATAR_ID / "avatar.json").read_text())
    assert metadata["face_boxes"] == [[127, 47, 387, 407]] * 30
    recipe = metadata["recipe"]
    assert (recipe["musetalk_version"], recipe["bbox_shift"], recipe["parsing_mode"], recipe["extra_margin"]) == (
        "1.0", -20, "raw", 0
    )
    assert main([*argv, "--force"]) == 0  # MUSETALK_BBOX_SHIFT's default: 0
    assert json.loads((avatars / AVATAR_ID / "avatar.json").read_text())["face_boxes"] == [[127, 87, 387, 407]] * 30


def test_bbox_shift_for_1_5_is_refused_by_the_cli(folders: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    avatars, _ = folders
    video = face_video(tmp_path / "person.mp4", 1.2, size=256)
    argv = ["prepare-avatar", str(video), "--avatar-id", AVATAR_ID, "--musetalk-version", "1.5"]
    assert main([*argv, "--bbox-shift", "5"]) == 1
    assert "bbox_shift applies to MuseTalk 1.0 only" in capsys.readouterr().err
    assert not (avatars / AVATAR_ID).exists()


def test_the_engine_serves_an_avatar_only_with_the_version_it_was_prepared_for(
    folders: tuple[Path, Path], tmp_path: Path, tiny_models: Path
) -> None:
    from server.avatars.errors import AvatarVersionError
    from server.lipsync.musetalk.engine import load_musetalk_engine
    from server.lipsync.musetalk.weights import MuseTalkWeights

    avatars, models = folders
    tiny_dwpose_model(models)
    video = face_video(tmp_path / "person.mp4", 1.2)
    request = PreparationRequest(video, AVATAR_ID, musetalk_version="1.0", bbox_shift=-20)
    avatar = load_prepared(preparer(avatars, models).prepare(request).directory)
    served = load_musetalk_engine(MuseTalkWeights(tiny_models, "1.0"), "cpu").load_avatar(avatar)
    assert set(served.engine_state.boxes) == {(127, 47, 387, 407)}  # as prepared: no margin added
    with pytest.raises(AvatarVersionError, match="prepared for MuseTalk 1.0, but this server runs MuseTalk 1.5") as caught:
        load_musetalk_engine(MuseTalkWeights(tiny_models, "1.5"), "cpu").load_avatar(avatar)
    assert caught.value.status == 409 and "--musetalk-version 1.5" in caught.value.message
