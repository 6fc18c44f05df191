"""Blending a generated face into its frame, as MuseTalk's blending.py does, with torch."""

from __future__ import annotations

import torch

from server.lipsync.musetalk.blending import paste_face


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
