"""The lip-sync engine interface: (avatar, audio features, avatar frame) -> video frame."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Avatar:
    """A person (or the built-in face) that sessions animate.

    Frames are shown in a ping-pong cycle while idle; speech replaces the face region of
    the cycle's frames with rendered ones.
    """

    avatar_id: str
    frames: np.ndarray
    """[N, H, W, 3] uint8 RGB."""
    face_boxes: np.ndarray
    """[N, 4] int (x1, y1, x2, y2): the face crop of each frame, in pixels."""
    fps: float = 25.0
    """Frame rate of the source video."""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError("avatar frames must be [N, H, W, 3] uint8")
        if self.face_boxes.shape != (len(self.frames), 4):
            raise ValueError("avatar face_boxes must be [N, 4], one box per frame")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])

    @property
    def cycle(self) -> tuple[int, ...]:
        """The ping-pong order of frames: 0 .. N-1, then back N-2 .. 1."""
        n = len(self.frames)
        return tuple(range(n)) + tuple(range(n - 2, 0, -1))


@dataclass(frozen=True)
class LoadedAvatar:
    """An avatar with what one engine precomputed for it (latents, masks...)."""

    avatar: Avatar
    engine_state: Any


@dataclass(frozen=True)
class RenderRequest:
    """One video frame to render: `avatar_index` into the avatar's frames."""

    avatar: LoadedAvatar
    avatar_index: int
    features: Any


class LipSyncEngine(abc.ABC):
    """Turns audio features and avatar frames into lip-synced frames, in batches.

    Engines are called from the render worker's thread only, never from the event loop,
    and know nothing of sessions, HTTP or WebRTC.
    """

    name: str
    default_max_batch: int
    audio_lookahead_seconds: float = 0.0
    """Audio after a frame's own that its features look at; streamed speech renders a
    frame only once that much more has arrived (or the utterance ended)."""
    audio_context_seconds: float = 0.0
    """Audio before a frame that its features look at (the sliding context streamed
    speech gives `audio_features`)."""
    render_ahead_seconds: float | None = None
    """How long before a job is wanted the worker may start it; None: as early as it
    likes. An engine that renders on the CPU shares the cores with the decoders, the
    event loop and the encoders: frames rendered far ahead take them from work due now."""

    @abc.abstractmethod
    def load_avatar(self, avatar: Avatar) -> LoadedAvatar:
        """Precompute what rendering `avatar` needs; called once per avatar."""

    @abc.abstractmethod
    def audio_features(self, samples: np.ndarray, fps: float, frames: range) -> list[Any]:
        """Features of video frames `frames` (generated at `fps`) of an utterance.

        `samples` is the whole utterance (float32 mono, 48 kHz), so that an engine may
        look at audio around a chunk's edges.
        """

    @abc.abstractmethod
    def render(self, batch: Sequence[RenderRequest]) -> list[np.ndarray]:
        """Full video frames ([H, W, 3] uint8 RGB), one per request, in order."""

    def precompute(self, avatar: Avatar) -> None:
        """Compute and store what rendering a freshly prepared avatar needs, before its
        first session (MuseTalk: the VAE latents); nothing by default."""

    def describe(self) -> dict[str, Any]:
        """Facts for logs and the health endpoint."""
        return {"engine": self.name}
