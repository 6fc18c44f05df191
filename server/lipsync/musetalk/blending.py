"""Putting a generated face back into its frame: the blend mask, and the paste, with torch.

MuseTalk (`musetalk/utils/blending.py`) builds each avatar frame's mask once:

1. a square around the face box, 1.5 times its larger side (`get_crop_box`);
2. face parsing of that square marks the face (1.5 "jaw" mode: skin, lips, mouth);
3. only the part inside the face box is kept, and only below the square's middle row;
4. a Gaussian blur whose kernel is a tenth of the square's side softens the edge.

Then every generated 256 x 256 face is resized to its face box (bilinear, like
`cv2.resize`) and alpha-blended over the frame with that mask. Outside the face box the
blend leaves the frame as it is, so only the box's part of the mask is kept here.

Face parsing needs a parsing network; until avatars bring their own parsing, the face is
taken to be the ellipse inscribed in the face box (exactly the built-in demo face).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MASK_EXPAND = 1.5
"""Side of the mask square over the larger side of the face box (get_crop_box's expand)."""
MASK_UPPER_BOUNDARY = 0.5
"""Rows of the square above this fraction never blend (upper_boundary_ratio)."""
MASK_BLUR_FRACTION = 0.1
"""Blur kernel size over the square's side (get_image_prepare_material)."""

Box = tuple[int, int, int, int]
"""x1, y1, x2, y2 in pixels, exclusive ends."""


def mask_square(box: Box) -> Box:
    """MuseTalk's square around a face box, centred on it (may reach outside the frame)."""
    x1, y1, x2, y2 = box
    centre_x, centre_y = (x1 + x2) // 2, (y1 + y2) // 2
    half = int(max(x2 - x1, y2 - y1) // 2 * MASK_EXPAND)
    return centre_x - half, centre_y - half, centre_x + half, centre_y + half


def blur_kernel_size(side: int) -> int:
    """Odd Gaussian kernel size for a square of `side` pixels (MuseTalk's formula)."""
    return int(MASK_BLUR_FRACTION * side // 2 * 2) + 1


def gaussian_blur(image: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """`cv2.GaussianBlur(image, (k, k), 0)` of a [H, W] float image: sigma from k, reflect-101 edges."""
    sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8  # OpenCV's sigma for sigma=0
    offsets = torch.arange(kernel_size, dtype=torch.float32, device=image.device) - kernel_size // 2
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    pad = kernel_size // 2
    x = image[None, None].float()  # [1, 1, H, W]
    # torch's "reflect" mirrors without repeating the edge pixel: OpenCV's BORDER_REFLECT_101.
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), kernel.view(1, 1, -1, 1))
    return x[0, 0]


def ellipse_face(box: Box, square: Box, device: torch.device | str = "cpu") -> torch.Tensor:
    """[S, S] float: 1 inside the ellipse inscribed in `box`, in `square`'s pixels."""
    x1, y1, x2, y2 = box
    sx, sy, side = square[0], square[1], square[2] - square[0]
    ys = torch.arange(side, dtype=torch.float32, device=device)[:, None] + sy + 0.5
    xs = torch.arange(side, dtype=torch.float32, device=device)[None, :] + sx + 0.5
    rx, ry = max((x2 - x1) / 2, 0.5), max((y2 - y1) / 2, 0.5)
    inside = ((xs - (x1 + x2) / 2) / rx) ** 2 + ((ys - (y1 + y2) / 2) / ry) ** 2 <= 1.0
    return inside.float()


def blend_mask(face: torch.Tensor, box: Box) -> torch.Tensor:
    """The blend weights over `box`: [box height, box width] uint8, 255 = generated face.

    `face` [S, S] marks the face in the mask square of `box` (1 = face), as face parsing
    would.
    """
    square = mask_square(box)
    side = square[2] - square[0]
    x1, y1, x2, y2 = (v - o for v, o in zip(box, square[:2] * 2))  # box in square pixels
    mask = torch.zeros_like(face)  # [S, S]
    mask[y1:y2, x1:x2] = face[y1:y2, x1:x2]
    mask[: int(side * MASK_UPPER_BOUNDARY)] = 0
    mask = gaussian_blur(mask * 255, blur_kernel_size(side))
    return mask[y1:y2, x1:x2].round().clamp(0, 255).to(torch.uint8)


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

