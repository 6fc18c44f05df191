"""MuseTalk's face box from 68 landmarks (1.5's, and 1.0's bbox_shift), on cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from server.avatars.face_box import clamp_box, crop_face, landmark_box, parse_box, with_margin


def landmarks(nose_ridge: tuple[float, float], others: list[tuple[float, float]]) -> np.ndarray:
    """68 points: point 29 at `nose_ridge`, the first others from index 0, the rest at 29."""
    points = np.tile(np.array(nose_ridge, np.float32), (68, 1))
    for i, point in enumerate(others):
        points[i] = point
    return points


def test_box_spans_the_landmarks_with_the_nose_ridge_at_its_vertical_centre() -> None:
    # Truncated to integers: nose ridge y 150.7 -> 150, chin 250.9 -> 250, x 120.6 -> 120,
    # 280.2 -> 280. The top is as far above 150 as the chin is below it: 150 - 100 = 50.
    points = landmarks((200.4, 150.7), [(120.6, 200.0), (200.0, 250.9), (280.2, 200.0)])
    assert landmark_box(points) == (120, 50, 280, 250)


def test_the_lowest_landmark_is_the_chin_whichever_point_it_is() -> None:
    # Point 0 (a jaw end) lower than point 8: it sets the bottom, 260; top 150 - 110 = 40.
    points = landmarks((200.0, 150.0), [(130.0, 260.0), (200.0, 240.0), (270.0, 200.0)])
    assert landmark_box(points) == (130, 40, 270, 260)


def test_the_top_stops_at_the_frame_edge() -> None:
    # 40 - (130 - 40) = -50, clamped to 0 as MuseTalk does since 2025-07.
    points = landmarks((100.0, 40.0), [(60.0, 90.0), (100.0, 130.0), (140.0, 90.0)])
    assert landmark_box(points) == (60, 0, 140, 130)


@pytest.mark.parametrize(
    "others",
    [
        [(-3.0, 200.0), (200.0, 250.0), (280.0, 200.0)],  # starts left of the frame
        [],  # all 68 points in one place: no width, no height
    ],
)
def test_a_degenerate_box_is_none_so_the_detector_box_is_used(others: list) -> None:
    assert landmark_box(landmarks((200.0, 150.0), others)) is None


def test_a_positive_bbox_shift_moves_the_centre_down_and_the_top_twice_as_far_down() -> None:
    # Centre 150 + 10 = 160; chin 250 is 90 below it, so the top is 160 - 90 = 70 (not 50).
    points = landmarks((200.4, 150.7), [(120.6, 200.0), (200.0, 250.9), (280.2, 200.0)])
    assert landmark_box(points, bbox_shift=10) == (120, 70, 280, 250)


def test_a_negative_bbox_shift_moves_the_top_up() -> None:
    # Centre 150 - 10 = 140; the chin is 110 below it: top 140 - 110 = 30. Shifted truncated
    # coordinates: the shift is added after the landmarks are cut to integers.
    points = landmarks((200.4, 150.7), [(120.6, 200.0), (200.0, 250.9), (280.2, 200.0)])
    assert landmark_box(points, bbox_shift=-10) == (120, 30, 280, 250)


def test_a_shift_past_the_chin_gives_no_box() -> None:
    points = landmarks((200.0, 150.0), [(120.0, 200.0), (200.0, 250.0), (280.0, 200.0)])
    assert landmark_box(points, bbox_shift=100) is None  # centre on the chin: empty
    assert landmark_box(points, bbox_shift=120) is None


def test_margin_extends_below_the_chin_within_the_frame() -> None:
    assert with_margin((120, 50, 280, 250), frame_height=300) == (120, 50, 280, 260)
    assert with_margin((120, 50, 280, 250), frame_height=255) == (120, 50, 280, 255)
    assert with_margin((120, 50, 280, 250), frame_height=300, margin=0) == (120, 50, 280, 250)  # 1.0


def test_clamp_keeps_the_part_inside_the_frame() -> None:
    assert clamp_box((-5, -2, 700, 500), width=640, height=480) == (0, 0, 640, 480)
    assert clamp_box((10, 20, 30, 40), width=640, height=480) == (10, 20, 30, 40)


def test_crop_is_256_square_whatever_the_box() -> None:
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[10:60, 20:120] = (200, 100, 50)
    crop = crop_face(frame, (20, 10, 120, 60))
    assert crop.shape == (256, 256, 3)
    assert (crop == (200, 100, 50)).all()


def test_parse_box() -> None:
    assert parse_box("10, 20,300,400") == (10, 20, 300, 400)
    with pytest.raises(ValueError, match="four integers"):
        parse_box("10,20,300")
    with pytest.raises(ValueError, match="x1 < x2"):
        parse_box("300,20,10,400")
