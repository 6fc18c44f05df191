"""What the engine precomputes for an avatar: face boxes, UNet latents and blend masks.

As MuseTalk's realtime `Avatar.prepare_material` does for every frame:

- the face box, for 1.5 extended 10 px down past the chin (`extra_margin`; the box the
  face is generated for and pasted back into);
- the 256 x 256 crop of that box encoded by the VAE into the UNet's 8 latent channels;
- the blend mask of the box (`server.avatars.masks`).

A prepared avatar (`server.avatars`) brings its boxes (margin included), 256 x 256 crops
and face-parsing masks, made by the recipe of the MuseTalk version it was prepared for
(`server.avatars.recipe`); the engine serves it only with that version (an avatar of the
other one is refused with what to do: prepare it again). Its latents are stored in its own folder, keyed by the VAE, the
first time it is loaded (or by `prepare-avatar` when the weights are there). For other
avatars (the drawn face when it could not be prepared) the boxes get the margin here, the
mask is the one preparation makes without parsing weights (a feathered ellipse in the
box), and latents and masks are cached under
the cache directory, one file per avatar, named after everything they depend on: the
frames, the boxes, the MuseTalk version and the VAE's files.

Computing latents takes the VAE a while (minutes for a long video on a CPU): both stores
make it a one-time cost.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from server.avatars.errors import AvatarVersionError
from server.avatars.masks import blend_mask
from server.avatars.recipe import EXTRA_MARGINS, recipe_version
from server.avatars.storage import PreparedAvatar
from server.lipsync.engine import Avatar
from server.lipsync.musetalk.blending import Box, clip_box
from server.lipsync.musetalk.model import MuseTalkModel
from server.lipsync.musetalk.vae import ENCODE_BATCH, FACE_SIZE, FaceEncoder, encode_faces

logger = logging.getLogger(__name__)

CHIN_MARGIN = EXTRA_MARGINS
"""Pixels added below each face box (realtime_inference.py's extra_margin, 1.5 only)."""
CACHE_FORMAT = 2
"""Bump when the content or the meaning of cache files changes."""


@dataclass(frozen=True)
class MuseTalkAvatar:
    """An avatar ready to render, on the model's device."""

    frames: torch.Tensor
    """[N, H, W, 3] uint8 RGB."""
    latents: torch.Tensor
    """[N, 8, 32, 32] UNet input latents (masked, reference), in the model's dtype."""
    boxes: tuple[Box, ...]
    """Per frame: where the face is generated and pasted (margin added, inside the frame)."""
    masks: tuple[torch.Tensor, ...]
    """Per frame: [box height, box width] uint8 blend weights (255 = generated face)."""


def generation_box(face_box: np.ndarray, width: int, height: int, version: str) -> Box:
    """The box MuseTalk generates the face for: the face box, chin margin added, on the frame."""
    x1, y1, x2, y2 = (int(v) for v in face_box)
    box = clip_box((x1, y1, x2, y2 + CHIN_MARGIN[version]), width, height)
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        raise ValueError(f"face box {tuple(face_box)} is empty inside the {width}x{height} frame")
    return box


def face_crops(frames: torch.Tensor, boxes: list[Box]) -> torch.Tensor:
    """The face boxes of `frames` [B, H, W, 3] uint8, resized: [B, 3, 256, 256] RGB in [0, 1].

    MuseTalk resizes with OpenCV's Lanczos-4; bicubic with antialiasing is the closest
    resampling torch has on the device.
    """
    crops = []
    for frame, (x1, y1, x2, y2) in zip(frames, boxes):
        crop = frame[y1:y2, x1:x2].permute(2, 0, 1)[None].float() / 255  # [1, 3, h, w]
        crops.append(F.interpolate(crop, size=(FACE_SIZE, FACE_SIZE), mode="bicubic", antialias=True))
    return torch.cat(crops).clamp(0, 1)  # [B, 3, 256, 256]


LATENTS_ENGINE = "musetalk"
"""Under this name prepared avatars store the latents (`PreparedAvatar.write_latents`)."""


def prepare_avatar(avatar: Avatar, model: MuseTalkModel, cache_dir: Path | None = None) -> MuseTalkAvatar:
    """Boxes, latents and masks of every frame of `avatar`, on the model's device."""
    if isinstance(avatar, PreparedAvatar):
        return from_prepared(avatar, model)
    return from_face_boxes(avatar, model, cache_dir)


def from_prepared(avatar: PreparedAvatar, model: MuseTalkModel) -> MuseTalkAvatar:
    """A prepared avatar's boxes and parsing masks, and its stored (or new) latents.

    Raises `AvatarVersionError` when it was prepared for another MuseTalk version.
    """
    prepared_for = recipe_version(avatar.metadata)
    if prepared_for != model.version:
        raise AvatarVersionError(avatar.avatar_id, prepared_for, model.version)
    boxes = [tuple(int(v) for v in box) for box in avatar.face_boxes]
    masks = []
    for i, box in enumerate(boxes):
        square, mask = avatar.blend_mask(i)
        masks.append(box_part(mask, square, box))
    latents = prepared_latents(avatar, model.face_encoder())
    frames = torch.from_numpy(np.ascontiguousarray(avatar.frames)).to(model.device)  # [N, H, W, 3]
    return MuseTalkAvatar(
        frames,
        latents.to(model.device, model.dtype),
        tuple(boxes),
        tuple(mask.to(model.device) for mask in masks),
    )


def box_part(mask: np.ndarray, square: Sequence[int], box: Box) -> torch.Tensor:
    """The face box's part of a mask over its square (which may pass the frame): [h, w] uint8."""
    x1, y1, x2, y2 = box
    sx, sy = int(square[0]), int(square[1])
    return torch.from_numpy(np.ascontiguousarray(mask[y1 - sy : y2 - sy, x1 - sx : x2 - sx]))


def prepared_latents(avatar: PreparedAvatar, encoder: FaceEncoder) -> torch.Tensor:
    """[N, 8, 32, 32] float32 latents of a prepared avatar's crops: read, or encoded and stored."""
    stored = avatar.read_latents(LATENTS_ENGINE, encoder.latents_version)
    if stored is not None and stored.get("latents", np.zeros(0)).shape[:1] == (len(avatar.crops),):
        return torch.from_numpy(stored["latents"])
    started = time.monotonic()
    latents = encoder.encode(avatar.crops)
    try:
        path = avatar.write_latents(LATENTS_ENGINE, encoder.latents_version, {"latents": latents.numpy()})
    except OSError as error:  # a read-only disk costs a recomputation next time, nothing more
        logger.warning("could not store the latents of avatar %s: %s", avatar.avatar_id, error)
    else:
        logger.info(
            "latents of avatar %s (%d frames) encoded in %.1f s, stored in %s",
            avatar.avatar_id, len(latents), time.monotonic() - started, path,
        )
    return latents


def from_face_boxes(avatar: Avatar, model: MuseTalkModel, cache_dir: Path | None) -> MuseTalkAvatar:
    """Boxes (margin added), latents and ellipse masks; latents and masks cached in `cache_dir`."""
    width, height = avatar.size
    boxes = [generation_box(box, width, height, model.version) for box in avatar.face_boxes]
    frames = torch.from_numpy(np.ascontiguousarray(avatar.frames)).to(model.device)  # [N, H, W, 3]
    path = None
    if cache_dir is not None:
        path = cache_dir / f"{avatar.avatar_id}-musetalk{model.version}-{cache_key(avatar, boxes, model)}.pt"
    cached = load_cached(path, len(boxes)) if path is not None else None
    if cached is not None:
        latents, masks = cached
    else:
        latents = encode_avatar(model, frames, boxes)
        # The mask preparation makes without face-parsing weights (a feathered ellipse).
        masks = []
        for frame, box in zip(avatar.frames, boxes):
            mask, square = blend_mask(frame, box, parser=None)
            masks.append(box_part(mask, square, box))
        if path is not None:
            save_cached(path, latents, masks)
    return MuseTalkAvatar(
        frames,
        latents.to(model.device, model.dtype),
        tuple(boxes),
        tuple(mask.to(model.device) for mask in masks),
    )


@torch.inference_mode()
def encode_avatar(model: MuseTalkModel, frames: torch.Tensor, boxes: list[Box]) -> torch.Tensor:
    """UNet latents of every frame: [N, 8, 32, 32] float32 on the CPU."""
    latents = []
    for start in range(0, len(boxes), ENCODE_BATCH):
        crops = face_crops(frames[start : start + ENCODE_BATCH], boxes[start : start + ENCODE_BATCH])
        latents.append(encode_faces(model.vae, crops).float().cpu())  # [b, 8, 32, 32]
    return torch.cat(latents)


def cache_key(avatar: Avatar, boxes: list[Box], model: MuseTalkModel) -> str:
    digest = hashlib.sha256()
    digest.update(f"format {CACHE_FORMAT}; MuseTalk {model.version}; vae {model.vae_fingerprint};".encode())
    digest.update(np.ascontiguousarray(avatar.frames).data)
    digest.update(np.asarray(avatar.face_boxes, dtype=np.int64).tobytes())
    digest.update(np.asarray(boxes, dtype=np.int64).tobytes())
    return digest.hexdigest()[:24]


def load_cached(path: Path, frame_count: int) -> tuple[torch.Tensor, list[torch.Tensor]] | None:
    """Latents and masks from a cache file; None when there is none or it is unusable."""
    if not path.is_file():
        return None
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
        latents, masks = content["latents"], content["masks"]
        if content["format"] != CACHE_FORMAT or len(latents) != frame_count or len(masks) != frame_count:
            raise ValueError("frame count or format differs")
    except Exception as error:  # a damaged file is recomputed, never fatal
        logger.warning("ignoring the avatar cache %s: %s", path, error)
        return None
    logger.info("avatar latents and masks read from %s", path)
    return latents, list(masks)


def save_cached(path: Path, latents: torch.Tensor, masks: list[torch.Tensor]) -> None:
    """Write atomically, so a reader never sees half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        torch.save(
            {"format": CACHE_FORMAT, "latents": latents.cpu(), "masks": [m.cpu() for m in masks]}, partial
        )
        partial.replace(path)
    except OSError as error:  # a read-only disk costs a recomputation next time, nothing more
        logger.warning("could not cache avatar latents in %s: %s", path, error)
        return
    logger.info("avatar latents and masks cached in %s", path)
