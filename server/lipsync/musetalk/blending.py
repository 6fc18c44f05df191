"""Putting a generated face back into its frame, with torch on the model's device.

Each avatar frame's blend mask (MuseTalk's `get_image_prepare_material`: the face
parsing's jaw region within the face box, lower half, blurred) is made once, when the
avatar is prepared (`server.avatars.masks`). Then every generated 256 x 256 face is
resized to its face box (bilinear, like `cv2.resize`) and alpha-blended over the frame
with that mask. Outside the face box the blend leaves the frame as it is, so only the
box's part of the mask is used here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Box = tuple[int, int, int, int]
"""x1, y1, x2, y2 in pixels, exclusive ends."""


def paste_face(frame: torch.Tensor, face: torch.Tensor, box: Box, mask: torch.Tensor) -> None:
    """Blend `face` into `frame` over `box`, in place.

    frame: [H, W, 3] uint8 RGB; face: [3, 256, 256] float in [0, 255];
    mask: [box height, box width] uint8 blend weights; `box` lies inside the frame.
    """
    x1, y1, x2, y2 = box
    resized = F.interpolate(
        face[None].float(), size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False
    )[0]  # [3, h, w], half-pixel centres as cv2.INTER_LINEAR
    region = frame[y1:y2, x1:x2].permute(2, 0, 1).float()  # [3, h, w]
    alpha = mask.float() / 255  # [h, w]
    blended = region + alpha * (resized - region)
    frame[y1:y2, x1:x2] = blended.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)


def clip_box(box: Box, width: int, height: int) -> Box:
    """`box` cut to the frame."""
    x1, y1, x2, y2 = box
    return max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)

