"""Faces and their 68 landmarks: mediapipe on the drawn face, DWPose's decoding."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from server.avatars.errors import LandmarksUnavailableError
from server.avatars.face_box import landmark_box, with_margin
from server.avatars.landmarks import (
    DWPoseLandmarks,
    FaceLandmarker,
    MediaPipeFaces,
    decode_simcc,
    open_landmarker,
    pose_affine,
)
from server.lipsync.demo.face import draw_face, head_centre
from tests.avatar_files import DWPOSE_FACE_BOX, designed_face, tiny_dwpose_model


@pytest.fixture(scope="module")
def faces() -> Iterator[MediaPipeFaces]:
    detector = MediaPipeFaces()
    yield detector
    detector.close()


def test_pose_input_covers_the_whole_frame_at_three_to_four() -> None:
    # 1280 x 720, padded by 1.25: 1600 x 900, widened to 3:4: 1600 x 2133.3; 288 / 1600 = 0.18.
    affine = pose_affine(1280, 720)
    np.testing.assert_allclose(affine, [[0.18, 0, 144 - 0.18 * 640], [0, 0.18, 192 - 0.18 * 360]])
    np.testing.assert_allclose(pose_affine(512, 512), [[0.45, 0, 28.8], [0, 0.45, 76.8]])


def test_simcc_peaks_decode_to_frame_pixels_with_the_lower_maximum_as_score() -> None:
    simcc_x = np.zeros((2, 576), np.float32)
    simcc_y = np.zeros((2, 768), np.float32)
    simcc_x[0, 172], simcc_y[0, 520] = 0.9, 0.7  # input (86, 260) -> frame (127.1, 407.1)
    simcc_x[1, 0], simcc_y[1, 0] = 0.2, 0.3  # input (0, 0) -> frame (-64, -170.7)
    points, scores = decode_simcc(simcc_x, simcc_y, pose_affine(512, 512))
    np.testing.assert_allclose(points, [[127.111, 407.111], [-64.0, -170.667]], atol=1e-3)
    np.testing.assert_allclose(scores, [0.7, 0.2])


def test_the_drawn_face_is_found_with_plausible_landmarks(faces: MediaPipeFaces) -> None:
    frame = draw_face(12)
    found = FaceLandmarker(faces, None)(frame)
    assert found.faces == 1 and found.landmarks is not None and found.landmarks.shape == (68, 2)
    cx, cy = head_centre(12)
    points = found.landmarks
    chin, nose_ridge, mouth, eyes = points[8], points[29], points[48:60].mean(0), points[36:48].mean(0)
    assert eyes[1] < nose_ridge[1] < mouth[1] < chin[1]
    assert abs(mouth[0] - cx) < 6 and abs(mouth[1] - (cy + 92)) < 8  # the drawn mouth
    assert abs(chin[1] - (cy + 180)) < 20  # the bottom of the head
    # The box the recipe makes of it holds the whole lower face.
    x1, y1, x2, y2 = with_margin(landmark_box(points), 512)
    assert x1 < cx - 110 and x2 > cx + 110 and y1 < cy - 100 and y2 > cy + 170


def test_of_two_faces_the_largest_is_chosen(faces: MediaPipeFaces) -> None:
    frame = np.full((360, 640, 3), 70, np.uint8)
    frame[20:340, 20:340] = cv2.resize(draw_face(0), (320, 320), interpolation=cv2.INTER_AREA)
    frame[100:300, 400:600] = cv2.resize(draw_face(3), (200, 200), interpolation=cv2.INTER_AREA)
    found = FaceLandmarker(faces, None)(frame)
    assert found.faces == 2
    assert found.detection is not None and found.detection.box[2] < 340
    assert found.landmarks[:, 0].max() < 340  # the landmarks are the left face's


def test_a_frame_without_a_face_has_no_landmarks(faces: MediaPipeFaces) -> None:
    found = FaceLandmarker(faces, None)(np.full((256, 256, 3), 90, np.uint8))
    assert found.faces == 0 and found.landmarks is None and found.detection is None


def test_dwpose_landmarks_come_from_its_face_keypoints(faces: MediaPipeFaces, tmp_path: Path) -> None:
    dwpose = DWPoseLandmarks(tiny_dwpose_model(tmp_path))
    assert dwpose.input_size == (288, 384)
    frame = draw_face(0)
    points = dwpose(frame)
    np.testing.assert_allclose(points, designed_face(), atol=0.6)  # half a SimCC bin
    assert with_margin(landmark_box(points), 512) == DWPOSE_FACE_BOX
    found = FaceLandmarker(faces, dwpose)(frame)
    np.testing.assert_array_equal(found.landmarks, points)


def test_with_several_faces_dwpose_gives_way_to_the_chosen_faces_mesh(
    faces: MediaPipeFaces, tmp_path: Path
) -> None:
    dwpose = DWPoseLandmarks(tiny_dwpose_model(tmp_path))
    frame = np.full((512, 512, 3), 70, np.uint8)
    frame[:300, :300] = cv2.resize(draw_face(0), (300, 300), interpolation=cv2.INTER_AREA)
    frame[330:490, 330:490] = cv2.resize(draw_face(0), (160, 160), interpolation=cv2.INTER_AREA)
    found = FaceLandmarker(faces, dwpose)(frame)
    assert found.faces == 2
    assert found.landmarks[:, 0].max() < 300  # the mesh of the large face, not the stand-in's


def test_without_mediapipe_the_refusal_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # as if it were not installed
    with pytest.raises(LandmarksUnavailableError, match="without its dependencies, as scripts/setup.sh"):
        with open_landmarker(tmp_path):
            pass
