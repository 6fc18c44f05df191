"""MuseTalk's weights: the official layout, and clear errors for missing or broken files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from server.lipsync.musetalk.model import load_model
from server.lipsync.musetalk.weights import MuseTalkWeights, WeightsError, locate_weights, manifest
from server.lipsync.musetalk.tiny_weights import write_tiny_weights

REPO = Path(__file__).resolve().parents[2]


def problems_of(models: Path, version: str = "1.5") -> dict[str, str]:
    return {
        str(p.path.relative_to(models)): p.problem for p in MuseTalkWeights(models, version).problems()
    }


def test_the_official_layout_is_complete(tiny_models: Path) -> None:
    assert problems_of(tiny_models, "1.5") == {}
    assert problems_of(tiny_models, "1.0") == {}
    weights = locate_weights(tiny_models)
    assert weights.version == "1.5"
    assert weights.unet_config == tiny_models / "musetalkV15" / "musetalk.json"
    assert weights.unet_weights == tiny_models / "musetalkV15" / "unet.pth"
    assert locate_weights(tiny_models, "1.0").unet_weights == tiny_models / "musetalk" / "pytorch_model.bin"


def test_auto_takes_1_0_when_only_its_unet_is_there(models_copy: Path) -> None:
    (models_copy / "musetalkV15" / "unet.pth").unlink()
    assert locate_weights(models_copy).version == "1.0"


def test_an_empty_folder_names_every_file_and_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as caught:
        locate_weights(tmp_path).require()
    message = str(caught.value)
    for name in [
        "musetalkV15/musetalk.json",
        "musetalkV15/unet.pth",
        "sd-vae/config.json",
        "sd-vae/diffusion_pytorch_model.bin",
        "whisper/config.json",
        "whisper/pytorch_model.bin",
        "whisper/preprocessor_config.json",
    ]:
        assert f"{tmp_path / name}: missing" in message
    assert "huggingface.co/TMElyralab/MuseTalk" in message
    assert "scripts/download_models.sh" in message


def test_a_missing_file_is_named(models_copy: Path) -> None:
    (models_copy / "whisper" / "preprocessor_config.json").unlink()
    problems = problems_of(models_copy)
    assert list(problems) == ["whisper/preprocessor_config.json"]
    assert problems["whisper/preprocessor_config.json"].startswith("missing")


def test_a_truncated_checkpoint_is_named(models_copy: Path) -> None:
    path = models_copy / "musetalkV15" / "unet.pth"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert problems_of(models_copy) == {
        "musetalkV15/unet.pth": "a damaged PyTorch checkpoint (truncated download?)"
    }


def test_an_html_page_saved_as_a_checkpoint_is_named(models_copy: Path) -> None:
    (models_copy / "whisper" / "pytorch_model.bin").write_text("<html>Access denied</html>")
    assert problems_of(models_copy) == {
        "whisper/pytorch_model.bin": "not a PyTorch checkpoint (saved by torch.save)"
    }


def test_empty_and_unparsable_configs_are_named(models_copy: Path) -> None:
    (models_copy / "sd-vae" / "config.json").write_text("")
    (models_copy / "whisper" / "config.json").write_text("{not json")
    problems = problems_of(models_copy)
    assert problems["sd-vae/config.json"] == "empty"
    assert problems["whisper/config.json"].startswith("not valid JSON")


def test_a_config_of_another_model_is_named(models_copy: Path) -> None:
    path = models_copy / "musetalkV15" / "musetalk.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "cross_attention_dim": 768}))
    assert problems_of(models_copy) == {
        "musetalkV15/musetalk.json": "not MuseTalk's configuration: cross_attention_dim=768 (MuseTalk needs 384)"
    }


def test_a_checkpoint_without_a_tensor_fails_to_load_naming_file_and_tensor(models_copy: Path) -> None:
    path = models_copy / "musetalkV15" / "unet.pth"
    state = torch.load(path, weights_only=True)
    del state["conv_in.weight"]
    torch.save(state, path)
    weights = MuseTalkWeights(models_copy, "1.5")
    assert weights.problems() == []  # the cheap checks cannot see it
    with pytest.raises(WeightsError, match=r"unet\.pth: does not hold the UNet .*1 missing: conv_in\.weight"):
        load_model(weights, "cpu")


def test_a_checkpoint_of_other_shapes_fails_to_load_naming_the_tensor(models_copy: Path) -> None:
    path = models_copy / "whisper" / "pytorch_model.bin"
    state = torch.load(path, weights_only=True)
    state["model.encoder.conv1.weight"] = torch.zeros(384, 128, 3)
    torch.save(state, path)
    with pytest.raises(WeightsError) as caught:
        load_model(MuseTalkWeights(models_copy, "1.5"), "cpu")
    assert (
        f"{path}: does not hold a whisper encoder under 'model.encoder.' "
        "(tensors 1 of another shape: conv1.weight (384, 128, 3) instead of (384, 80, 3))"
    ) in str(caught.value)


def test_the_vae_loads_with_modern_names_and_from_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    models = write_tiny_weights(tmp_path / "models", versions=("1.5",), legacy_vae_names=False)
    legacy = write_tiny_weights(tmp_path / "legacy", versions=("1.5",))
    bin_path = models / "sd-vae" / "diffusion_pytorch_model.bin"
    save_file(torch.load(bin_path, weights_only=True), bin_path.with_suffix(".safetensors"))
    bin_path.unlink()
    assert MuseTalkWeights(models, "1.5").problems() == []
    modern = load_model(MuseTalkWeights(models, "1.5"), "cpu").vae.state_dict()
    old = load_model(MuseTalkWeights(legacy, "1.5"), "cpu").vae.state_dict()
    assert modern.keys() == old.keys()
    assert all(torch.equal(modern[k], old[k]) for k in modern)


def test_a_truncated_safetensors_file_is_named(models_copy: Path) -> None:
    from safetensors.torch import save_file

    bin_path = models_copy / "sd-vae" / "diffusion_pytorch_model.bin"
    path = bin_path.with_suffix(".safetensors")
    save_file(torch.load(bin_path, weights_only=True), path)
    bin_path.unlink()
    path.write_bytes(path.read_bytes()[:-100])
    assert problems_of(models_copy) == {
        "sd-vae/diffusion_pytorch_model.safetensors": "a damaged safetensors file (truncated download?)"
    }


def test_whisper_and_the_vae_load_from_safetensors_as_from_bin(tmp_path: Path) -> None:
    # The same seed in both layouts: the same tensors, saved once as .bin, once as .safetensors.
    as_bin = write_tiny_weights(tmp_path / "bin", versions=("1.5",))
    as_safetensors = write_tiny_weights(tmp_path / "safetensors", versions=("1.5",), safetensors=True)
    assert not (as_safetensors / "whisper" / "pytorch_model.bin").exists()
    assert (as_safetensors / "whisper" / "model.safetensors").is_file()
    assert MuseTalkWeights(as_safetensors, "1.5").problems() == []
    assert locate_weights(as_safetensors).checkpoint("whisper") == as_safetensors / "whisper" / "model.safetensors"
    from_bin = load_model(MuseTalkWeights(as_bin, "1.5"), "cpu")
    from_safetensors = load_model(MuseTalkWeights(as_safetensors, "1.5"), "cpu")
    for network in ("audio.encoder", "vae"):
        expected = _network(from_bin, network).state_dict()
        loaded = _network(from_safetensors, network).state_dict()
        assert loaded.keys() == expected.keys()
        assert all(torch.equal(loaded[k], expected[k]) for k in expected), network


def _network(model, dotted: str) -> torch.nn.Module:
    for name in dotted.split("."):
        model = getattr(model, name)
    return model


def test_a_truncated_whisper_safetensors_file_is_named(tmp_path: Path) -> None:
    models = write_tiny_weights(tmp_path / "models", versions=("1.5",), safetensors=True)
    path = models / "whisper" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    assert problems_of(models) == {"whisper/model.safetensors": "a damaged safetensors file (truncated download?)"}


def test_without_either_whisper_file_both_names_are_given(models_copy: Path) -> None:
    (models_copy / "whisper" / "pytorch_model.bin").unlink()
    assert problems_of(models_copy)["whisper/pytorch_model.bin"].startswith("missing (or model.safetensors)")


def test_models_manifest_json_describes_the_layout() -> None:
    assert json.loads((REPO / "models" / "manifest.json").read_text()) == manifest()
