"""`avatar-server check-models`: every weight file loads, or the broken one is named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from server.cli import main
from tests.avatar_files import tiny_dwpose_model, tiny_face_parsing_weights


@pytest.fixture
def models(tiny_models: Path, tmp_path: Path) -> Path:
    folder = Path(shutil.copytree(tiny_models, tmp_path / "models"))
    tiny_face_parsing_weights(folder)
    tiny_dwpose_model(folder)
    return folder


def test_a_complete_folder_passes(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-models", "--models-dir", str(models)]) == 0
    out = capsys.readouterr().out
    assert "MuseTalk 1.5: every file" in out and "MuseTalk 1.0: every file" in out
    assert "face parsing: " in out and "landmarks: " in out and "loads" in out


def test_a_broken_parsing_checkpoint_is_named(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = models / "face-parse-bisent" / "79999_iter.pth"
    broken.write_bytes(b"<html>not found</html>")
    assert main(["check-models", "--models-dir", str(models), "--version", "1.5"]) == 1
    assert f"face parsing: {broken} is unusable" in capsys.readouterr().err


def test_optional_preparation_weights_may_be_absent(tiny_models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-models", "--models-dir", str(tiny_models), "--version", "1.5"]) == 0
    out = capsys.readouterr().out
    assert "feathered masks are used instead" in out and "face mesh is used instead" in out


def test_a_broken_dwpose_model_fails_a_preparation_with_a_clear_error(models: Path, tmp_path: Path) -> None:
    from server.avatars.errors import WeightsUnusableError
    from server.avatars.preparation import PreparationRequest, Preparer
    from server.avatars.video import VideoLimits
    from tests.avatar_files import face_video

    (models / "dwpose" / "dw-ll_ucoco_384.onnx").write_bytes(b"truncated")
    preparer = Preparer(tmp_path / "avatars", models, VideoLimits(1.0, 60.0, 1920), max_faceless_share=0.1)
    with pytest.raises(WeightsUnusableError, match="dw-ll_ucoco_384.onnx is not a usable DWPose ONNX model"):
        preparer.prepare(PreparationRequest(face_video(tmp_path / "v.mp4", 1.2, size=256), "alice"))
    assert not (tmp_path / "avatars" / "alice").exists()
