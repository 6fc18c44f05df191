"""Tiny random weights of MuseTalk's real classes, written in the official layout.

For tests and the CPU benchmark: every file a real `models/` folder has, with the same
names and formats, but networks narrow enough to run on a laptop CPU. What the engine's
code path depends on is kept: the UNet's 8 input / 4 output channels and 384-wide
cross-attention, the VAE's 4 latent channels and 8x downsampling, whisper's 384-wide
encoder with 4 layers (5 hidden states) over 30 s mel inputs. The faces they draw are
noise, of course.

    python -m server.lipsync.musetalk.tiny_weights DIRECTORY
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file as save_safetensors
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

from server.lipsync.musetalk.unet import MUSETALK_UNET_CONFIG, build_unet
from server.lipsync.musetalk.vae import LEGACY_ATTENTION_NAMES, SD_VAE_FT_MSE_CONFIG, build_vae

TINY_UNET_CONFIG: dict[str, Any] = {
    **MUSETALK_UNET_CONFIG,
    "block_out_channels": [32, 32, 64, 64],
    "layers_per_block": 1,
    "norm_num_groups": 8,
}
TINY_VAE_CONFIG: dict[str, Any] = {
    **SD_VAE_FT_MSE_CONFIG,
    "block_out_channels": [4, 8, 8, 8],
    "layers_per_block": 1,
    "norm_num_groups": 4,
}
TINY_WHISPER_CONFIG: dict[str, Any] = {
    "d_model": 384,
    "encoder_layers": 4,
    "encoder_attention_heads": 6,
    "encoder_ffn_dim": 64,
    "decoder_layers": 1,
    "decoder_attention_heads": 6,
    "decoder_ffn_dim": 64,
    "num_mel_bins": 80,
    "max_source_positions": 1500,
    "max_target_positions": 16,
    "vocab_size": 64,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "decoder_start_token_id": 3,
}

WHISPER_TINY_CONFIG: dict[str, Any] = {
    "d_model": 384, "encoder_layers": 4, "encoder_attention_heads": 6, "encoder_ffn_dim": 1536,
    "decoder_layers": 4, "decoder_attention_heads": 6, "decoder_ffn_dim": 1536,
    "num_mel_bins": 80, "max_source_positions": 1500, "max_target_positions": 448, "vocab_size": 51865,
}
"""openai/whisper-tiny's configuration, as far as the shapes go."""
TIED_WHISPER_TENSOR = "proj_out.weight"
"""Shares its storage with the decoder's token embedding; safetensors stores it once."""
UNET_FILES = {"1.5": ("musetalkV15", "unet.pth"), "1.0": ("musetalk", "pytorch_model.bin")}


def write_tiny_weights(
    models_dir: Path,
    versions: tuple[str, ...] = ("1.5", "1.0"),
    seed: int = 0,
    legacy_vae_names: bool = True,
    safetensors: bool = False,
) -> Path:
    """Write a complete models folder of tiny random weights into `models_dir`.

    The VAE's attention tensors are saved under their legacy names by default, as the
    official sd-vae-ft-mse `.bin` (diffusers 0.4.2) has them. With `safetensors` the VAE
    and whisper are saved as `.safetensors` files instead of `.bin` (as transformers and
    diffusers save them now, tied tensors once).
    """
    return write_random_weights(
        models_dir, TINY_UNET_CONFIG, TINY_VAE_CONFIG, TINY_WHISPER_CONFIG,
        versions=versions, seed=seed, legacy_vae_names=legacy_vae_names, safetensors=safetensors,
    )


def write_full_size_weights(
    models_dir: Path, versions: tuple[str, ...] = ("1.5",), device: str = "cpu", dtype: torch.dtype = torch.float16
) -> Path:
    """A models folder of random weights of MuseTalk's real shapes (the GPU benchmark's).

    About 2 GB in fp16; built on `device` (a GPU initialises the 0.9 G parameters in a
    moment, a CPU takes a minute).
    """
    return write_random_weights(
        models_dir, MUSETALK_UNET_CONFIG, SD_VAE_FT_MSE_CONFIG, WHISPER_TINY_CONFIG,
        versions=versions, device=device, dtype=dtype,
    )


def write_random_weights(
    models_dir: Path,
    unet_config: dict[str, Any],
    vae_config: dict[str, Any],
    whisper_config: dict[str, Any],
    versions: tuple[str, ...] = ("1.5", "1.0"),
    seed: int = 0,
    legacy_vae_names: bool = True,
    safetensors: bool = False,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> Path:
    """Random weights of the networks these configs describe, in the official layout."""
    models_dir.mkdir(parents=True, exist_ok=True)

    def stored(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", dtype or v.dtype).contiguous() for k, v in state.items()}

    with torch.random.fork_rng(devices=[] if device == "cpu" else [torch.device(device)]):
        for offset, version in enumerate(versions):
            torch.manual_seed(seed + offset)
            folder, name = UNET_FILES[version]
            (models_dir / folder).mkdir(exist_ok=True)
            _write_json(models_dir / folder / "musetalk.json", unet_config)
            unet = _initialised(build_unet(unet_config, device))
            torch.save(stored(unet.state_dict()), models_dir / folder / name)
            del unet

        torch.manual_seed(seed + 10)
        vae_dir = models_dir / "sd-vae"
        vae_dir.mkdir(exist_ok=True)
        _write_json(vae_dir / "config.json", vae_config)
        state = stored(build_vae(vae_config, device).state_dict())
        if legacy_vae_names:
            state = _legacy_attention_names(state)
        if safetensors:
            save_safetensors(state, vae_dir / "diffusion_pytorch_model.safetensors")
        else:
            torch.save(state, vae_dir / "diffusion_pytorch_model.bin")

        torch.manual_seed(seed + 20)
        whisper_dir = models_dir / "whisper"
        whisper_dir.mkdir(exist_ok=True)
        config = WhisperConfig(**whisper_config)
        config.to_json_file(whisper_dir / "config.json")
        state = stored(WhisperForConditionalGeneration(config).state_dict())
        if safetensors:
            # The output projection is the token embedding (tied): stored once, as HF does.
            state.pop(TIED_WHISPER_TENSOR)
            save_safetensors(state, whisper_dir / "model.safetensors")
        else:
            torch.save(state, whisper_dir / "pytorch_model.bin")
        WhisperFeatureExtractor(feature_size=80).to_json_file(whisper_dir / "preprocessor_config.json")
    return models_dir


def _initialised(module: torch.nn.Module) -> torch.nn.Module:
    """Random weights everywhere: diffusers leaves some layers zero, which would hide bugs."""
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith("weight") and parameter.ndim > 1:
                torch.nn.init.normal_(parameter, std=1.0 / max(parameter[0].numel(), 1) ** 0.5)
    return module


def _legacy_attention_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    modern = {new: old for old, new in LEGACY_ATTENTION_NAMES.items()}
    renamed = {}
    for key, tensor in state.items():
        for new, old in modern.items():
            marker = f".attentions.0.{new}."
            if marker in key:
                key = key.replace(marker, f".attentions.0.{old}.")
        renamed[key] = tensor
    return renamed


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m server.lipsync.musetalk.tiny_weights DIRECTORY", file=sys.stderr)
        sys.exit(2)
    print(write_tiny_weights(Path(sys.argv[1])))
