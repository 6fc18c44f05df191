"""The `demo` engine: a drawn mouth that opens with the loudness of the speech."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from server.lipsync.demo.face import draw_mouth, face_scale, mouth_centre_in_box
from server.lipsync.engine import Avatar, LipSyncEngine, LoadedAvatar, RenderRequest
from server.media.clock import AUDIO_SAMPLE_RATE

# Loudness (dBFS, RMS over a video frame) mapped linearly onto the mouth opening:
# at or below SILENCE_DB the mouth is closed, at or above FULL_DB it is wide open.
SILENCE_DB = -45.0
FULL_DB = -15.0
# How far (left/right, up, down; unscaled pixels) a drawn mouth reaches from its centre.
MOUTH_REACH = (72.0, 30.0, 90.0)


@dataclass(frozen=True)
class DemoAvatarState:
    scales: np.ndarray
    """[N] mouth size per frame, relative to the built-in face."""
    mouths: np.ndarray
    """[N, 2] mouth centre (x, y) per frame."""


class DemoEngine(LipSyncEngine):
    """Draws a mouth whose opening follows the RMS loudness of each video frame's audio."""

    name = "demo"
    default_max_batch = 8
    render_ahead_seconds = 0.5

    def load_avatar(self, avatar: Avatar) -> LoadedAvatar:
        boxes = avatar.face_boxes.astype(np.float64)
        scales = np.array([face_scale(box) for box in boxes])
        mouths = np.array([mouth_centre_in_box(box) for box in boxes])
        return LoadedAvatar(avatar, DemoAvatarState(scales, mouths))

    def audio_features(self, samples: np.ndarray, fps: float, frames: range) -> list[float]:
        openings = []
        for j in frames:
            start = int(round(j * AUDIO_SAMPLE_RATE / fps))
            end = int(round((j + 1) * AUDIO_SAMPLE_RATE / fps))
            window = samples[start:end]
            rms = float(np.sqrt(np.mean(np.square(window, dtype=np.float64)))) if len(window) else 0.0
            level = 20 * np.log10(rms + 1e-9)
            openings.append(float(np.clip((level - SILENCE_DB) / (FULL_DB - SILENCE_DB), 0.0, 1.0)))
        return openings

    def render(self, batch: Sequence[RenderRequest]) -> list[np.ndarray]:
        frames = []
        for request in batch:
            state: DemoAvatarState = request.avatar.engine_state
            i = request.avatar_index
            scale = float(state.scales[i])
            frame = request.avatar.avatar.frames[i].copy()
            # Only the mouth's neighbourhood is redrawn, in float, then put back.
            height, width = frame.shape[:2]
            mx, my = float(state.mouths[i, 0]), float(state.mouths[i, 1])
            x0, x1 = max(int(mx - MOUTH_REACH[0] * scale), 0), min(int(mx + MOUTH_REACH[0] * scale) + 1, width)
            y0, y1 = max(int(my - MOUTH_REACH[1] * scale), 0), min(int(my + MOUTH_REACH[2] * scale) + 1, height)
            region = frame[y0:y1, x0:x1].astype(np.float32)
            draw_mouth(region, (mx - x0, my - y0), scale, float(request.features))
            frame[y0:y1, x0:x1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)
            frames.append(frame)
        return frames
