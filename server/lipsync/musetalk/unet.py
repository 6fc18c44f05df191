"""MuseTalk's UNet: diffusers' `UNet2DConditionModel`, built from `musetalk.json`.

It is Stable Diffusion 1.x's UNet with 8 input channels (the masked face latent and a
reference latent, 4 each) and cross-attention on 384-wide whisper-tiny features instead
of CLIP text. MuseTalk runs it once, at timestep 0: a one-step image-to-image network,
not a diffusion sampler.

The checkpoints (`unet.pth` for 1.5, `pytorch_model.bin` for 1.0) are plain state dicts
saved with `torch.save(unet.state_dict())` and loaded strictly (MuseTalk's
`musetalk/models/unet.py`), so their keys are diffusers' own names for this config.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from diffusers import UNet2DConditionModel

from server.lipsync.musetalk.checkpoint import load_into, read_state_dict
from server.lipsync.musetalk.weights import MuseTalkWeights

# `musetalk.json` of both releases (MuseTalk's train_codes/musetalk.json; 1.5 was trained
# from the 1.0 architecture). `attention_head_dim: 8` is diffusers' legacy spelling of
# the number of heads: 8 heads in every attention layer.
MUSETALK_UNET_CONFIG: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.6.0.dev0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 384,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ],
}

TIMESTEP = 0
"""The only timestep MuseTalk runs (its realtime_inference.py: `torch.tensor([0])`)."""


def build_unet(config: dict[str, Any], device: torch.device | str = "meta") -> UNet2DConditionModel:
    """The UNet `config` describes, with uninitialised weights on `device`.

    On the meta device this allocates nothing: a shape check, or the skeleton that a
    checkpoint's tensors are assigned to.
    """
    with torch.device(device):
        # Keys starting with "_" are metadata that diffusers' constructor drops.
        return UNet2DConditionModel(**config)


def load_unet(weights: MuseTalkWeights, device: torch.device, dtype: torch.dtype) -> UNet2DConditionModel:
    """The UNet of `weights.version` in `dtype` on `device`, ready for inference."""
    config_path, state_path = weights.unet_config, weights.unet_weights
    config = json.loads(config_path.read_text(encoding="utf-8"))
    try:
        unet = build_unet(config)
    except (TypeError, ValueError) as error:
        raise weights.error(config_path, f"not a UNet2DConditionModel configuration ({error})") from error
    state = read_state_dict(weights, state_path)
    load_into(unet, state, weights, state_path, "the UNet of its musetalk.json", device, dtype)
    return unet
