"""The image autoencoder: sd-vae-ft-mse (diffusers `AutoencoderKL`), as MuseTalk uses it.

A 256 x 256 face crop is 4 x 32 x 32 in latent space (downsampling 8). MuseTalk encodes
each avatar frame twice — once with the lower half of the crop blanked, once whole — and
the UNet's 8 input channels are those two latents side by side (`musetalk/models/vae.py`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL

from server.lipsync.musetalk.checkpoint import load_into, read_state_dict
from server.lipsync.musetalk.weights import MuseTalkWeights

FACE_SIZE = 256
"""Side of the face crop the networks work on, in pixels."""
LATENT_SIZE = FACE_SIZE // 8
LATENT_CHANNELS = 4

# stabilityai/sd-vae-ft-mse's config.json (it has no scaling_factor: diffusers' default
# 0.18215 applies, as in MuseTalk).
SD_VAE_FT_MSE_CONFIG: dict[str, Any] = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.4.2",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 256,
}

# diffusers < 0.14 named the mid-block attention's projections differently; checkpoints
# of that age (sd-vae-ft-mse's .bin is from diffusers 0.4.2) still use these names, which
# diffusers' own loader renames the same way.
LEGACY_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def build_vae(config: dict[str, Any], device: torch.device | str = "meta") -> AutoencoderKL:
    """The autoencoder `config` describes, with uninitialised weights on `device`."""
    with torch.device(device):
        return AutoencoderKL.from_config({k: v for k, v in config.items() if not k.startswith("_")})


def load_vae(weights: MuseTalkWeights, device: torch.device, dtype: torch.dtype) -> AutoencoderKL:
    """sd-vae from `weights.vae_dir`, in `dtype` on `device`, ready for inference."""
    config_path = weights.vae_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    try:
        vae = build_vae(config)
    except (TypeError, ValueError) as error:
        raise weights.error(config_path, f"not an AutoencoderKL configuration ({error})") from error
    state_path = weights.checkpoint("vae")
    state = modern_attention_names(read_state_dict(weights, state_path), set(vae.state_dict()))
    load_into(vae, state, weights, state_path, "the autoencoder of sd-vae/config.json", device, dtype)
    return vae


def modern_attention_names(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """`state` with legacy attention names (`...attentions.0.query.weight`) renamed."""
    renamed = {}
    for key, tensor in state.items():
        if key not in expected:
            block, _, leaf = key.rpartition(".")
            parent, _, name = block.rpartition(".")
            if name in LEGACY_ATTENTION_NAMES:
                key = f"{parent}.{LEGACY_ATTENTION_NAMES[name]}.{leaf}"
        renamed[key] = tensor
    return renamed


def encode_faces(vae: AutoencoderKL, faces: torch.Tensor) -> torch.Tensor:
    """UNet input latents of face crops: [B, 3, 256, 256] RGB in [0, 1] -> [B, 8, 32, 32].

    Channels 0-3 encode the crop with its lower half blanked (the part the UNet redraws:
    pixels set to -1 after normalisation, as in MuseTalk's training and inference),
    channels 4-7 the whole crop (the reference). MuseTalk samples the latent
    distribution; its mean is used here, so an avatar's latents are reproducible (its
    standard deviation is tiny; training uses the mean too).
    """
    scale = vae.config.scaling_factor
    pixels = faces.to(vae.dtype) * 2 - 1  # [B, 3, 256, 256] in [-1, 1]
    masked = pixels.clone()
    masked[:, :, FACE_SIZE // 2 :, :] = -1
    masked_latents = vae.encode(masked).latent_dist.mean * scale  # [B, 4, 32, 32]
    reference_latents = vae.encode(pixels).latent_dist.mean * scale  # [B, 4, 32, 32]
    return torch.cat([masked_latents, reference_latents], dim=1)  # [B, 8, 32, 32]


ENCODE_BATCH = 8
"""Face crops per VAE encoder call while preparing an avatar."""


def decode_faces(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Faces from UNet outputs: [B, 4, 32, 32] -> [B, 3, 256, 256] RGB in [0, 255], float."""
    images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample  # [B, 3, 256, 256]
    return ((images / 2 + 0.5).clamp(0, 1) * 255).float()


@dataclass(frozen=True)
class FaceEncoder:
    """The VAE's encoder side: 256 x 256 face crops -> the UNet's 8 input latent channels."""

    vae: AutoencoderKL
    device: torch.device
    vae_fingerprint: str

    @property
    def latents_version(self) -> str:
        """Latents depend on the crops and the VAE only, not on MuseTalk 1.0 / 1.5."""
        return "vae-" + hashlib.sha256(self.vae_fingerprint.encode()).hexdigest()[:16]

    @torch.inference_mode()
    def encode(self, crops: np.ndarray) -> torch.Tensor:
        """[N, 256, 256, 3] uint8 RGB crops -> [N, 8, 32, 32] float32 latents on the CPU."""
        latents = []
        for start in range(0, len(crops), ENCODE_BATCH):
            batch = torch.from_numpy(np.ascontiguousarray(crops[start : start + ENCODE_BATCH]))
            faces = batch.to(self.device).permute(0, 3, 1, 2).float() / 255  # [b, 3, 256, 256]
            latents.append(encode_faces(self.vae, faces).float().cpu())  # [b, 8, 32, 32]
        return torch.cat(latents)


def load_face_encoder(weights: MuseTalkWeights, device: torch.device, dtype: torch.dtype) -> FaceEncoder:
    """Only the VAE of `weights` (for `prepare-avatar`, which needs no UNet or whisper)."""
    return FaceEncoder(load_vae(weights, device, dtype), device, weights.fingerprint("vae"))
