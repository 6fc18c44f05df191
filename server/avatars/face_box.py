"""MuseTalk's face box: from 68 face landmarks to the region the model regenerates.

The recipe (MuseTalk `musetalk/utils/preprocessing.py` and `scripts/realtime_inference.py`):
left and right edges at the landmarks' extremes; the lower edge at the lowest landmark
(the chin), plus 1.5's extra margin; the upper edge as far above the nose-ridge point (29)
as the chin is below it, so that point sits at the box's vertical centre. MuseTalk 1.0's
`bbox_shift` moves that centre down (positive) or up (negative) first, which moves the top
twice as far the other way: a positive shift gives a smaller box, less of the nose. The
box is then cropped and resized to the model's 256 x 256 input.
"""

from __future__ import annotations

import cv2
import numpy as np

Box = tuple[int, int, int, int]
"""x1, y1, x2, y2 in pixels; x2 and y2 exclusive, as in a numpy slice."""

LANDMARK_COUNT = 68
NOSE_RIDGE = 29
"""iBUG-68 index of the lower nose ridge: the vertical centre of the box."""
EXTRA_MARGIN = 10
"""Pixels MuseTalk 1.5 adds below the chin (`--extra_margin`), as in its training crops;
1.0 adds none (`server.avatars.recipe`)."""
CROP_SIZE = 256


def landmark_box(landmarks: np.ndarray, bbox_shift: int = 0) -> Box | None:
    """The box of [68, 2] landmarks (x, y) before the margin; None when degenerate.

    MuseTalk truncates the landmarks to integers first, and so do we; `bbox_shift` is added
    to the truncated centre. A degenerate box (empty, or starting left of the frame) means
    the landmarks are unusable; the caller falls back to the face detector's box, as
    MuseTalk does. (MuseTalk shifts point 29 in place, so a centre shifted below the chin
    becomes the chin: an empty box there, an upside-down one here, degenerate either way.)
    """
    points = landmarks.astype(np.int32)
    xs, ys = points[:, 0], points[:, 1]
    chin = int(ys.max())
    centre = int(points[NOSE_RIDGE, 1]) + bbox_shift
    top = max(0, centre - (chin - centre))
    x1, x2 = int(xs.min()), int(xs.max())
    if chin - top <= 0 or x2 - x1 <= 0 or x1 < 0:
        return None
    return x1, top, x2, chin


def with_margin(box: Box, frame_height: int, margin: int = EXTRA_MARGIN) -> Box:
    """The box extended `margin` pixels below the chin, within the frame."""
    x1, y1, x2, y2 = box
    return x1, y1, x2, min(y2 + margin, frame_height)


def clamp_box(box: Box, width: int, height: int) -> Box:
    """The part of `box` inside a `width` x `height` frame.

    MuseTalk crops with numpy slicing, which silently clips a box that runs off the
    frame; clamping the stored box gives the same crop and lets blending use it as is.
    """
    x1, y1, x2, y2 = box
    return max(0, x1), max(0, y1), min(width, x2), min(height, y2)


def crop_face(frame: np.ndarray, box: Box, size: int = CROP_SIZE) -> np.ndarray:
    """The face crop the model sees: [size, size, 3], aspect not kept, Lanczos as MuseTalk."""
    x1, y1, x2, y2 = box
    return cv2.resize(frame[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_LANCZOS4)


def parse_box(text: str) -> Box:
    """'x1,y1,x2,y2' (integers, pixels) as a box; `ValueError` says what is wrong."""
    parts = [part.strip() for part in text.split(",")]
    try:
        x1, y1, x2, y2 = (int(part) for part in parts)
    except ValueError:
        raise ValueError(f"a face box is four integers x1,y1,x2,y2 (got {text!r})") from None
    if not (x1 < x2 and y1 < y2):
        raise ValueError(f"a face box needs x1 < x2 and y1 < y2 (got {text!r})")
    return x1, y1, x2, y2
