"""`MuseTalkEngine`: MuseTalk's realtime inference behind the `LipSyncEngine` interface.

Per render batch, everything stays on the model's device until the finished frames: the
requests' latents and audio windows are stacked, the UNet runs one step, the VAE decodes
the faces, each face is resized into its box and blended over its frame, and the frames
are copied to the host once (one copy per frame size present in the batch).

Colours are RGB everywhere. MuseTalk reads frames with OpenCV (BGR) but converts them to
RGB before the VAE encoder and converts the decoder's RGB output back, so the networks
see RGB either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from server.lipsync.engine import Avatar, LipSyncEngine, LoadedAvatar, RenderRequest
from server.lipsync.musetalk.audio import (
    STREAM_CONTEXT_SECONDS,
    STREAM_LOOKAHEAD_SECONDS,
    AudioFeatures,
    WindowRule,
)
from server.avatars.storage import PreparedAvatar
from server.lipsync.musetalk.avatar import MuseTalkAvatar, prepare_avatar, prepared_latents
from server.lipsync.musetalk.blending import paste_face
from server.lipsync.musetalk.model import MuseTalkModel, load_model
from server.lipsync.musetalk.weights import MuseTalkWeights

# Frames per render batch unless LIPSYNC_MAX_BATCH says otherwise: on a GPU large batches
# are nearly free (MuseTalk's realtime script uses 20); on a CPU a batch only adds latency.
GPU_MAX_BATCH = 16
CPU_MAX_BATCH = 4


class MuseTalkEngine(LipSyncEngine):
    """Lip-synced frames from MuseTalk, batched across sessions by the render worker."""

    name = "musetalk"
    audio_lookahead_seconds = STREAM_LOOKAHEAD_SECONDS
    # Streamed speech runs whisper over this much audio before a chunk (a 30 s segment
    # holds it and what follows): the features then differ little from the whole file's.
    audio_context_seconds = STREAM_CONTEXT_SECONDS

    def __init__(
        self,
        model: MuseTalkModel,
        cache_dir: Path | None = None,
        audio_window: WindowRule = WindowRule.CENTRED,
    ) -> None:
        self.model = model
        self.cache_dir = cache_dir
        self.audio = AudioFeatures(model.audio, audio_window)
        self.default_max_batch = GPU_MAX_BATCH if model.device.type == "cuda" else CPU_MAX_BATCH

    def load_avatar(self, avatar: Avatar) -> LoadedAvatar:
        return LoadedAvatar(avatar, prepare_avatar(avatar, self.model, self.cache_dir))

    def precompute(self, avatar: Avatar) -> None:
        if isinstance(avatar, PreparedAvatar):
            prepared_latents(avatar, self.model.face_encoder())

    @torch.inference_mode()
    def audio_features(self, samples: np.ndarray, fps: float, frames: range) -> list[torch.Tensor]:
        """One [50, 384] tensor per frame, on the model's device."""
        return list(self.audio.frame_features(samples, fps, frames).unbind(0))

    @torch.inference_mode()
    def render(self, batch: Sequence[RenderRequest]) -> list[np.ndarray]:
        states: list[MuseTalkAvatar] = [request.avatar.engine_state for request in batch]
        indices = [request.avatar_index for request in batch]
        latents = torch.stack([s.latents[i] for s, i in zip(states, indices)])  # [B, 8, 32, 32]
        audio = torch.stack([request.features for request in batch])  # [B, 50, 384]
        faces = self.model.generate(latents, audio)  # [B, 3, 256, 256]

        frames: list[np.ndarray | None] = [None] * len(batch)
        by_size: dict[tuple[int, ...], list[int]] = {}
        for b, state in enumerate(states):
            by_size.setdefault(tuple(state.frames.shape[1:]), []).append(b)
        for members in by_size.values():
            canvas = torch.stack([states[b].frames[indices[b]] for b in members])  # [G, H, W, 3] uint8
            for g, b in enumerate(members):
                state, i = states[b], indices[b]
                paste_face(canvas[g], faces[b], state.boxes[i], state.masks[i])
            host = canvas.cpu().numpy()  # the one device -> host copy of these frames
            for g, b in enumerate(members):
                frames[b] = host[g]
        return frames  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "version": self.model.version,
            "device": str(self.model.device),
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "max_batch": self.default_max_batch,
            "audio_window": self.audio.rule.value,
        }


def load_musetalk_engine(
    weights: MuseTalkWeights,
    device: torch.device | str,
    cache_dir: Path | None = None,
    audio_window: WindowRule = WindowRule.CENTRED,
) -> MuseTalkEngine:
    """The engine with `weights` loaded on `device`; `WeightsError` names unusable files."""
    return MuseTalkEngine(load_model(weights, device), cache_dir, audio_window)
