"""Blending masks: where a rendered face replaces the frame, as MuseTalk prepares them.

For each frame, a square around the face box (1.5 times its larger side) is cut out; the
mask inside it is the face parsing's region limited to the face box and to the square's
lower half, then blurred so the rendered mouth fades into the frame (MuseTalk
`get_image_prepare_material`). The region is MuseTalk 1.5's "jaw" mode (skin grown
downwards, lips; not the nose) or 1.0's "raw" one (skin and lips as parsed).

Without the face-parsing weights a feathered ellipse over the lower face takes the
parsing's place; everything else is the same.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
from PIL import Image

from server.avatars.face_box import Box
from server.avatars.face_parsing import INPUT_SIZE, LOWER_LIP, MOUTH, NOSE, SKIN, UPPER_LIP, FaceParser
from server.avatars.recipe import JAW_MODE, RAW_MODE

EXPAND = 1.5
"""Side of the mask square over the larger side of the face box."""
UPPER_BOUNDARY_RATIO = 0.5
"""Rows of the square above this share of its height are never blended."""
BLUR_RATIO = 0.1
"""Gaussian blur kernel, as a share of the square's side."""
CHEEK_WIDTH = 90
"""Half-width (of 512) of the central band where the jaw region grows; 1.5 uses 90/90."""
# The jaw dilation kernel: a cone 21 rows high (empty in its upper half) on a 12-row tail
# 21 wide. Anchored at its centre, it grows the skin up to 16 px upwards over a width of
# 21 and up to 6 px downwards in a narrowing cone (OpenCV's dilation reads the source at
# the kernel's offsets from each pixel).
CONE_HEIGHT = 21
TAIL_HEIGHT = 12
# Cheek erosion: a flat ellipse that trims the skin sideways more than vertically.
CHEEK_KERNEL_SIZE = (35, 3)
CHEEK_EROSIONS = 2
LIPS_AND_MOUTH = (MOUTH, UPPER_LIP, LOWER_LIP)


def mask_box(face_box: Box, expand: float = EXPAND) -> Box:
    """The square the mask covers, centred on the face box; it may extend past the frame."""
    x1, y1, x2, y2 = face_box
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    half = int(max(x2 - x1, y2 - y1) // 2 * expand)
    return cx - half, cy - half, cx + half, cy + half


def crop_padded(frame: np.ndarray, box: Box) -> np.ndarray:
    """`frame[box]`, with black where the box runs off the frame (as PIL's crop)."""
    x1, y1, x2, y2 = box
    height, width = frame.shape[:2]
    out = np.zeros((y2 - y1, x2 - x1, *frame.shape[2:]), frame.dtype)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    if sx1 < sx2 and sy1 < sy2:
        out[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = frame[sy1:sy2, sx1:sx2]
    return out


@functools.cache
def jaw_kernel() -> np.ndarray:
    size = CONE_HEIGHT + TAIL_HEIGHT
    centre = size // 2
    kernel = np.zeros((size, size), np.uint8)
    for row in range(CONE_HEIGHT // 2, CONE_HEIGHT):
        half = row - CONE_HEIGHT // 2
        kernel[row, centre - half : centre + half + 1] = 1
    tail_half = CONE_HEIGHT // 2
    kernel[CONE_HEIGHT:, centre - tail_half : centre + tail_half + 1] = 1
    return kernel


@functools.cache
def cheek_mask(cheek_width: int = CHEEK_WIDTH) -> np.ndarray:
    """255 on the two side bands of the 512 x 512 parsing (the cheeks), 0 between."""
    mask = np.zeros((INPUT_SIZE, INPUT_SIZE), np.uint8)
    centre = INPUT_SIZE // 2
    mask[:, : centre - cheek_width + 1] = 255  # cv2.rectangle's corners are inclusive
    mask[:, centre + cheek_width :] = 255
    return mask


def jaw_region(labels: np.ndarray, cheek_width: int = CHEEK_WIDTH) -> np.ndarray:
    """MuseTalk 1.5's "jaw" parsing mode: 255 where the mouth may change, [512, 512] uint8.

    Skin is dilated downwards over the jaw line; at the cheeks the dilation is eroded back
    sideways. Of that region the nose is left out; lips and mouth are always in.
    """
    skin = np.where(labels == SKIN, 255, 0).astype(np.uint8)
    grown = cv2.dilate(skin, jaw_kernel(), iterations=1)
    trimmed = cv2.erode(
        grown, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, CHEEK_KERNEL_SIZE), iterations=CHEEK_EROSIONS
    )
    cheeks = cheek_mask(cheek_width)
    region = (trimmed & cheeks) | (grown & ~cheeks)
    keep = ((region == 255) & (labels != NOSE)) | np.isin(labels, LIPS_AND_MOUTH)
    return np.where(keep, 255, 0).astype(np.uint8)


def raw_region(labels: np.ndarray) -> np.ndarray:
    """MuseTalk's "raw" parsing mode (1.0's): 255 on skin, lips and mouth, [512, 512] uint8.

    The nose, eyes, brows and neck are other classes, so they stay out.
    """
    return np.where(np.isin(labels, (SKIN, *LIPS_AND_MOUTH)), 255, 0).astype(np.uint8)


PARSING_REGIONS = {JAW_MODE: jaw_region, RAW_MODE: raw_region}


def feathered_region(face_box: Box, square: Box) -> np.ndarray:
    """The stand-in for parsing: the ellipse inscribed in the face box, [side, side] uint8."""
    x1, y1, x2, y2 = face_box
    sx, sy = square[0], square[1]
    side = square[2] - square[0]
    region = np.zeros((side, side), np.uint8)
    centre = ((x1 + x2) // 2 - sx, (y1 + y2) // 2 - sy)
    axes = ((x2 - x1) // 2, (y2 - y1) // 2)
    cv2.ellipse(region, centre, axes, 0, 0, 360, 255, thickness=-1)
    return region


def blend_mask(
    frame: np.ndarray, face_box: Box, parser: FaceParser | None, mode: str = JAW_MODE
) -> tuple[np.ndarray, Box]:
    """The blending mask of one frame ([side, side] uint8, 255 = rendered face) and its square.

    `mode` is the parsing mode (`jaw` for MuseTalk 1.5, `raw` for 1.0); without a parser
    both use the feathered ellipse.
    """
    square = mask_box(face_box)
    side = square[2] - square[0]
    if parser is not None:
        face_large = Image.fromarray(crop_padded(frame, square))
        labels = parser(face_large)
        # PIL's default filter for a grey image (bicubic) softens the edges, as in MuseTalk.
        region = np.asarray(Image.fromarray(PARSING_REGIONS[mode](labels)).resize((side, side)))
    else:
        region = feathered_region(face_box, square)
    mask = np.zeros((side, side), np.uint8)
    x1, y1 = face_box[0] - square[0], face_box[1] - square[1]
    x2, y2 = face_box[2] - square[0], face_box[3] - square[1]
    mask[y1:y2, x1:x2] = region[y1:y2, x1:x2]  # the face box's part of the region only
    mask[: int(side * UPPER_BOUNDARY_RATIO)] = 0
    kernel = blur_kernel_size(side)
    return cv2.GaussianBlur(mask, (kernel, kernel), 0), square


def blur_kernel_size(side: int) -> int:
    """((0.1 * side) // 2) * 2 + 1: odd, as MuseTalk's operator precedence makes it."""
    return int(BLUR_RATIO * side // 2 * 2) + 1
