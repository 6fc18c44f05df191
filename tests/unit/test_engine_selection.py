"""LIPSYNC_ENGINE: musetalk when its weights are usable, demo otherwise, and why."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from server.cli import main
from server.lipsync.selection import EngineUnavailableError, check_engine, select_engine
from server.settings import Settings, SettingsError


def settings_for(models: Path, tmp_path: Path, **environ: str) -> Settings:
    return Settings.from_env(
        {"MODELS_DIR": str(models), "AVATARS_DIR": str(tmp_path / "avatars"), "LIPSYNC_DEVICE": "cpu", **environ}
    )


def test_auto_runs_musetalk_1_5_when_its_weights_are_complete(tiny_models: Path, tmp_path: Path) -> None:
    choice = select_engine(settings_for(tiny_models, tmp_path))
    assert choice.engine.name == "musetalk"
    assert choice.engine.describe()["version"] == "1.5"
    assert choice.reason.startswith("auto: MuseTalk weights are complete; MuseTalk 1.5 from")
    assert "on cpu (float32)" in choice.reason


def test_musetalk_version_picks_1_0(tiny_models: Path, tmp_path: Path) -> None:
    choice = select_engine(settings_for(tiny_models, tmp_path, LIPSYNC_ENGINE="musetalk", MUSETALK_VERSION="1.0"))
    assert choice.engine.describe()["version"] == "1.0"
    assert choice.reason.startswith("LIPSYNC_ENGINE=musetalk; MuseTalk 1.0")


def test_auto_falls_back_to_demo_naming_the_missing_files(tmp_path: Path) -> None:
    choice = select_engine(settings_for(tmp_path / "models", tmp_path))
    assert choice.engine.name == "demo"
    assert choice.reason.startswith("auto: MuseTalk 1.5 cannot run (")
    assert f"{tmp_path / 'models' / 'musetalkV15' / 'unet.pth'}: missing" in choice.reason
    assert "scripts/download_models.sh" in choice.reason


def test_auto_falls_back_to_demo_when_a_file_fails_to_load(models_copy: Path, tmp_path: Path) -> None:
    path = models_copy / "musetalkV15" / "unet.pth"
    state = torch.load(path, weights_only=True)
    state.pop("conv_out.bias")
    torch.save(state, path)
    choice = select_engine(settings_for(models_copy, tmp_path, MUSETALK_VERSION="1.5"))
    assert choice.engine.name == "demo"
    assert f"{path}: does not hold the UNet" in choice.reason
    assert "conv_out.bias" in choice.reason


def test_musetalk_without_weights_is_a_startup_error_naming_the_files(models_copy: Path, tmp_path: Path) -> None:
    (models_copy / "sd-vae" / "diffusion_pytorch_model.bin").unlink()
    settings = settings_for(models_copy, tmp_path, LIPSYNC_ENGINE="musetalk")
    for attempt in (check_engine, select_engine):
        with pytest.raises(EngineUnavailableError) as caught:
            attempt(settings)
        message = str(caught.value)
        assert message.startswith("LIPSYNC_ENGINE=musetalk, but MuseTalk 1.5 weights in")
        assert f"{models_copy / 'sd-vae' / 'diffusion_pytorch_model.bin'}: missing" in message
        assert "huggingface.co/stabilityai/sd-vae-ft-mse" in message


def test_serve_refuses_to_start_without_the_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LIPSYNC_ENGINE", "musetalk")
    monkeypatch.setenv("MODELS_DIR", str(tmp_path))
    assert main(["serve", "--port", "1"]) == 2
    assert "whisper/pytorch_model.bin: missing" in capsys.readouterr().err


def test_a_cuda_device_without_cuda_is_explained(tiny_models: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    message = "LIPSYNC_ENGINE=musetalk: LIPSYNC_DEVICE='cuda' names a CUDA device, and there is none"
    with pytest.raises(EngineUnavailableError, match=message):
        select_engine(settings_for(tiny_models, tmp_path, LIPSYNC_ENGINE="musetalk", LIPSYNC_DEVICE="cuda"))
    choice = select_engine(settings_for(tiny_models, tmp_path, LIPSYNC_DEVICE="cuda"))
    assert choice.engine.name == "demo"
    assert choice.reason == (
        "auto: MuseTalk 1.5 weights are complete, but LIPSYNC_DEVICE='cuda' names a CUDA device, and there is none"
    )


def test_auto_takes_complete_weights_even_without_cuda_and_warns(
    tiny_models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with caplog.at_level("WARNING", logger="server.lipsync.selection"):
        choice = select_engine(settings_for(tiny_models, tmp_path, LIPSYNC_DEVICE=""))
    assert choice.engine.name == "musetalk"
    assert "on cpu (float32)" in choice.reason
    assert "MuseTalk runs on the CPU here" in caplog.text
    assert "LIPSYNC_ENGINE=demo" in caplog.text


def test_the_selection_is_logged_with_its_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from server.core import AvatarServer

    caplog.set_level(logging.INFO, logger="server.core")
    server = AvatarServer(settings_for(tmp_path, tmp_path))
    server.worker.close()
    assert "lip-sync engine: demo (auto: MuseTalk 1.5 cannot run" in caplog.text


def test_musetalk_version_must_be_known() -> None:
    with pytest.raises(SettingsError, match="MUSETALK_VERSION must be one of auto, 1.5, 1.0"):
        Settings.from_env({"MUSETALK_VERSION": "2"})
