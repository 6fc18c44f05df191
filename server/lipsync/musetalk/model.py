"""MuseTalk's networks together, and the one inference step: latents + audio -> faces."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from server.lipsync.musetalk.audio import AudioEncoder, load_audio_encoder
from server.lipsync.musetalk.unet import TIMESTEP, load_unet
from server.lipsync.musetalk.vae import FaceEncoder, decode_faces, load_vae
from server.lipsync.musetalk.weights import MuseTalkWeights

logger = logging.getLogger(__name__)


def dtype_for(device: torch.device) -> torch.dtype:
    """fp16 on CUDA (as MuseTalk's realtime inference runs), fp32 elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.float32


@dataclass
class MuseTalkModel:
    """UNet, VAE and whisper encoder of one MuseTalk version, on one device."""

    version: str
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    audio: AudioEncoder
    device: torch.device
    dtype: torch.dtype
    vae_fingerprint: str
    """Changes when the VAE's files do: part of the key of latents cached for avatars."""

    def face_encoder(self) -> FaceEncoder:
        return FaceEncoder(self.vae, self.device, self.vae_fingerprint)

    @torch.inference_mode()
    def generate(self, latents: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Faces for UNet inputs: latents [B, 8, 32, 32] and audio [B, 50, 384].

        Returns [B, 3, 256, 256] RGB in [0, 255] (float) on the model's device.
        """
        timestep = torch.full((len(latents),), TIMESTEP, device=self.device)
        predicted = self.unet(
            latents.to(self.dtype), timestep, encoder_hidden_states=audio.to(self.dtype)
        ).sample  # [B, 4, 32, 32]
        return decode_faces(self.vae, predicted)  # [B, 3, 256, 256]


def load_model(weights: MuseTalkWeights, device: torch.device | str) -> MuseTalkModel:
    """All of MuseTalk's networks for `weights.version` on `device`; `WeightsError` if unusable."""
    device = torch.device(device)
    dtype = dtype_for(device)
    started = time.monotonic()
    weights.require()
    unet = load_unet(weights, device, dtype)
    vae = load_vae(weights, device, dtype)
    audio = load_audio_encoder(weights, device, dtype)
    logger.info(
        "MuseTalk %s loaded from %s on %s (%s) in %.1f s",
        weights.version, weights.models_dir, device, str(dtype).removeprefix("torch."),
        time.monotonic() - started,
    )
    return MuseTalkModel(weights.version, unet, vae, audio, device, dtype, weights.fingerprint("vae"))
