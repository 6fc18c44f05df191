"""The built-in avatar: a face drawn by code, with blinks and a slight sway."""

from __future__ import annotations

import math

import numpy as np

from server.lipsync.engine import Avatar

DEMO_AVATAR_ID = "demo"
DEMO_SIZE = 512
DEMO_FRAME_COUNT = 50
DEMO_FPS = 25.0

# Geometry, in pixels of the 512 x 512 canvas, relative to the head centre.
HEAD_CENTRE = (256.0, 236.0)
HEAD_RADII = (140.0, 180.0)
SWAY_PIXELS = (7.0, 3.0)
EYE_OFFSET = (52.0, -38.0)
EYE_RADII = (26.0, 14.0)
MOUTH_OFFSET_Y = 92.0
MOUTH_HALF_WIDTH = 46.0
BLINK_FRAMES = {20: 0.55, 21: 1.0, 22: 1.0, 23: 0.55}
# The face box MuseTalk's recipe gives the drawn face (measured on its prepared frames),
# relative to the head centre: jaw to jaw, from as far above the nose ridge as the chin is
# below it, down to 10 px past the chin. x1, y1, x2, y2.
FACE_BOX = (-138.0, -156.0, 138.0, 180.0)

BACKGROUND_TOP = np.array([58, 74, 104], np.float32)
BACKGROUND_BOTTOM = np.array([24, 30, 46], np.float32)
SKIN = np.array([228, 184, 152], np.float32)
SKIN_SHADOW = np.array([204, 156, 128], np.float32)
HAIR = np.array([62, 42, 34], np.float32)
SHIRT = np.array([46, 110, 138], np.float32)
EYE_WHITE = np.array([246, 244, 240], np.float32)
IRIS = np.array([64, 92, 70], np.float32)
PUPIL = np.array([16, 16, 20], np.float32)
BROW = np.array([80, 56, 44], np.float32)
LIPS = np.array([176, 86, 92], np.float32)
MOUTH_INSIDE = np.array([72, 22, 32], np.float32)
TEETH = np.array([240, 236, 226], np.float32)
TONGUE = np.array([190, 92, 100], np.float32)


def fill_ellipse(
    canvas: np.ndarray,
    centre: tuple[float, float],
    radii: tuple[float, float],
    color: np.ndarray,
    clip_below: float | None = None,
    clip_above: float | None = None,
) -> None:
    """Paint an anti-aliased ellipse onto a float32 [H, W, 3] canvas, in place.

    `clip_below` / `clip_above` keep only the part above / below a row (for eyelids).
    """
    cx, cy = centre
    rx, ry = max(radii[0], 0.5), max(radii[1], 0.5)
    height, width = canvas.shape[:2]
    x0, x1 = max(int(cx - rx) - 1, 0), min(int(cx + rx) + 2, width)
    y0, y1 = max(int(cy - ry) - 1, 0), min(int(cy + ry) + 2, height)
    if x0 >= x1 or y0 >= y1:
        return
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    # Signed distance to the edge, in pixels (approximately, along the smaller radius).
    d = (np.sqrt(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2) - 1.0) * min(rx, ry)
    alpha = np.clip(0.5 - d, 0.0, 1.0)
    if clip_below is not None:
        alpha = alpha * np.clip(clip_below - ys + 0.5, 0.0, 1.0)
    if clip_above is not None:
        alpha = alpha * np.clip(ys - clip_above + 0.5, 0.0, 1.0)
    region = canvas[y0:y1, x0:x1]
    region += alpha[..., None] * (color - region)


def head_centre(index: int) -> tuple[float, float]:
    """Centre of the head in idle frame `index`: a slow sway."""
    phase = 2 * math.pi * index / DEMO_FRAME_COUNT
    return (
        HEAD_CENTRE[0] + SWAY_PIXELS[0] * math.sin(phase),
        HEAD_CENTRE[1] + SWAY_PIXELS[1] * math.sin(2 * phase),
    )


def face_scale(box: np.ndarray) -> float:
    """Size of a face drawn like the demo one, relative to it, from its face box's width.

    The width, not the height: the box's upper edge depends on the nose-ridge landmark,
    which wanders on a drawn face (it jumps during a blink); the jaw line does not.
    """
    return float(box[2] - box[0]) / (FACE_BOX[2] - FACE_BOX[0])


def mouth_centre_in_box(box: np.ndarray) -> tuple[float, float]:
    """Where the mouth is within a face box, for faces drawn like the demo one."""
    x1, _, x2, y2 = (float(v) for v in box)
    return (x1 + x2) / 2, y2 - (FACE_BOX[3] - MOUTH_OFFSET_Y) * face_scale(box)


def draw_mouth(canvas: np.ndarray, centre: tuple[float, float], scale: float, opening: float) -> None:
    """Paint a mouth `opening` (0 closed .. 1 wide open) at `centre`, in place.

    The area is first covered with skin so that any earlier mouth disappears.
    """
    cx, cy = centre
    w = MOUTH_HALF_WIDTH * scale
    fill_ellipse(canvas, (cx, cy + 8 * scale), (w * 1.45, w * 1.05), SKIN)
    if opening < 0.04:
        fill_ellipse(canvas, (cx, cy), (w, 7 * scale), LIPS)
        fill_ellipse(canvas, (cx, cy), (w * 0.86, 1.6 * scale), MOUTH_INSIDE)
        return
    half_height = (7 + 34 * opening) * scale
    fill_ellipse(canvas, (cx, cy + half_height * 0.35), (w * (1 + 0.08 * opening), half_height), LIPS)
    inner = (w * 0.84, max(half_height - 6 * scale, 1.5 * scale))
    inner_centre = (cx, cy + half_height * 0.35)
    fill_ellipse(canvas, inner_centre, inner, MOUTH_INSIDE)
    top = inner_centre[1] - inner[1]
    fill_ellipse(canvas, inner_centre, inner, TEETH, clip_below=top + 7 * scale * min(1, opening * 2))
    bottom = inner_centre[1] + inner[1]
    fill_ellipse(
        canvas, (cx, bottom - 2 * scale), (inner[0] * 0.6, inner[1] * 0.45), TONGUE,
        clip_below=bottom,
    )


def draw_face(index: int, opening: float = 0.0) -> np.ndarray:
    """Idle frame `index` of the built-in avatar with the mouth `opening`; [H, W, 3] uint8."""
    size = DEMO_SIZE
    rows = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    canvas = np.broadcast_to(
        BACKGROUND_TOP + rows * (BACKGROUND_BOTTOM - BACKGROUND_TOP), (size, size, 3)
    ).copy()
    cx, cy = head_centre(index)
    rx, ry = HEAD_RADII

    fill_ellipse(canvas, (cx, cy + ry + 150), (rx * 1.9, 190), SHIRT)
    fill_ellipse(canvas, (cx, cy + ry * 0.8), (rx * 0.45, ry * 0.45), SKIN_SHADOW)
    fill_ellipse(canvas, (cx, cy - ry * 0.12), (rx * 1.08, ry * 0.98), HAIR)
    fill_ellipse(canvas, (cx - rx, cy + 4), (16, 30), SKIN_SHADOW)
    fill_ellipse(canvas, (cx + rx, cy + 4), (16, 30), SKIN_SHADOW)
    fill_ellipse(canvas, (cx, cy), (rx, ry), SKIN)
    fill_ellipse(canvas, (cx, cy - ry * 0.78), (rx * 0.92, ry * 0.36), HAIR, clip_below=cy - ry * 0.55)

    closed = BLINK_FRAMES.get(index % DEMO_FRAME_COUNT, 0.0)
    for side in (-1, 1):
        ex, ey = cx + side * EYE_OFFSET[0], cy + EYE_OFFSET[1]
        fill_ellipse(canvas, (ex, ey - 30), (30, 6), BROW)
        fill_ellipse(canvas, (ex, ey), EYE_RADII, EYE_WHITE)
        fill_ellipse(canvas, (ex, ey + 1), (11, 11), IRIS)
        fill_ellipse(canvas, (ex, ey + 1), (5, 5), PUPIL)
        if closed > 0:
            lid = ey - EYE_RADII[1] + 2 * EYE_RADII[1] * closed
            fill_ellipse(canvas, (ex, ey), (EYE_RADII[0] + 2, EYE_RADII[1] + 2), SKIN, clip_below=lid)
    fill_ellipse(canvas, (cx, cy + 30), (12, 26), SKIN_SHADOW)
    fill_ellipse(canvas, (cx, cy + 26), (9, 24), SKIN)

    draw_mouth(canvas, (cx, cy + MOUTH_OFFSET_Y), 1.0, opening)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


def face_box(index: int) -> np.ndarray:
    cx, cy = head_centre(index)
    return (np.array([cx, cy, cx, cy]) + np.array(FACE_BOX)).round().astype(np.int64)


def build_demo_avatar() -> Avatar:
    """The built-in avatar, drawn in memory (a few tenths of a second)."""
    frames = np.stack([draw_face(i) for i in range(DEMO_FRAME_COUNT)])
    boxes = np.stack([face_box(i) for i in range(DEMO_FRAME_COUNT)])
    return Avatar(DEMO_AVATAR_ID, frames, boxes, fps=DEMO_FPS, metadata={"built_in": True})
