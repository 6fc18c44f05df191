"""Blending a generated face into its frame, as MuseTalk's blending.py does, with torch."""

from __future__ import annotations

import pytest
import torch

from server.lipsync.musetalk.blending import (
    blend_mask,
    blur_kernel_size,
    ellipse_face,
    gaussian_blur,
    mask_square,
    paste_face,
)


def test_mask_square_and_blur_follow_musetalks_worked_example() -> None:
    # get_crop_box((100, 120, 300, 330), 1.5): centre (200, 225), half side int(105 * 1.5).
    assert mask_square((100, 120, 300, 330)) == (43, 68, 357, 382)
    assert blur_kernel_size(314) == 31
    assert blur_kernel_size(100) == 11


def test_blur_keeps_flat_images_flat_and_spreads_edges_symmetrically() -> None:
    flat = torch.full((40, 60), 200.0)
    torch.testing.assert_close(gaussian_blur(flat, 11), flat)
    step = torch.zeros(40, 60)
    step[:, 30:] = 255
    blurred = gaussian_blur(step, 11)
    assert blurred[0, 29].item() + blurred[0, 30].item() == pytest.approx(255.0)
    assert blurred[0, 20].item() == 0 and blurred[0, 40].item() == pytest.approx(255.0)


def test_blend_mask_covers_the_lower_face_only_with_a_soft_edge() -> None:
    box = (100, 100, 300, 340)
    mask = blend_mask(ellipse_face(box, mask_square(box)), box)
    assert mask.shape == (240, 200) and mask.dtype == torch.uint8
    square_middle = 220 - 100  # row of the box at the square's middle row (y 220)
    assert mask[: square_middle - 20].max() == 0  # upper face: never generated
    assert mask[square_middle + 30 : 200, 80:120].min() == 255  # the mouth: fully generated
    assert 0 < mask[-1, 100] < 255  # at the chin the ellipse ends, softly
    assert mask[:, 0].max() < 128  # the ellipse leaves the box's corners and sides to the frame
    assert 0 < mask[square_middle + 2, 100] < 255  # the upper edge is soft


def test_paste_face_blends_only_the_box_by_the_mask() -> None:
    frame = torch.full((64, 80, 3), 10, dtype=torch.uint8)
    face = torch.full((3, 256, 256), 250.0)
    box = (20, 10, 60, 50)
    mask = torch.zeros(40, 40, dtype=torch.uint8)
    mask[20:] = 255
    mask[10:20] = 128
    paste_face(frame, face, box, mask)
    assert (frame[:10] == 10).all() and (frame[50:] == 10).all()
    assert (frame[:, :20] == 10).all() and (frame[:, 60:] == 10).all()
    assert (frame[10:20, 20:60] == 10).all()  # mask 0
    assert (frame[20:30, 20:60] == 130).all()  # mask 128: 10 + 128 / 255 * 240, rounded
    assert (frame[30:50, 20:60] == 250).all()  # mask 255: the face
