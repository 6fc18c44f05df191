"""The MuseTalk version an avatar is prepared for: 1.5's recipe and 1.0's, worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from server.avatars.errors import AvatarError
from server.avatars.landmarks import FaceDetection, FrameFaces
from server.avatars.preparation import Preparer, frame_box
from server.avatars.recipe import MuseTalkRecipe, recipe_version
from server.avatars.video import VideoLimits


def faces(nose_ridge_y: float, chin_y: float) -> FrameFaces:
    """One face: landmarks from x 120 to 280, point 29 at `nose_ridge_y`, the chin at `chin_y`."""
    points = np.tile(np.array((200.0, nose_ridge_y), np.float32), (68, 1))
    points[0], points[8], points[16] = (120.0, 200.0), (200.0, chin_y), (280.0, 200.0)
    return FrameFaces(1, points, FaceDetection((100.0, 60.0, 300.0, 280.0), 0.9))


def test_1_5_adds_the_chin_margin_and_parses_in_jaw_mode() -> None:
    recipe = MuseTalkRecipe("1.5")
    assert (recipe.extra_margin, recipe.parsing_mode) == (10, "jaw")
    assert frame_box(faces(150, 250), 640, 480, recipe) == (120, 50, 280, 260)


def test_1_0_has_no_margin_and_parses_raw() -> None:
    recipe = MuseTalkRecipe("1.0")
    assert (recipe.extra_margin, recipe.parsing_mode) == (0, "raw")
    assert frame_box(faces(150, 250), 640, 480, recipe) == (120, 50, 280, 250)


def test_1_0_bbox_shift_moves_the_top() -> None:
    # Centre 150 + 20 = 170, chin 80 below: top 90.
    assert frame_box(faces(150, 250), 640, 480, MuseTalkRecipe("1.0", 20)) == (120, 90, 280, 250)
    assert frame_box(faces(150, 250), 640, 480, MuseTalkRecipe("1.0", -20)) == (120, 10, 280, 250)


def test_a_shift_that_empties_the_landmark_box_falls_back_to_the_detector() -> None:
    assert frame_box(faces(150, 250), 640, 480, MuseTalkRecipe("1.0", 100)) == (100, 60, 300, 280)


def test_bbox_shift_is_refused_for_1_5_and_beyond_the_limit() -> None:
    with pytest.raises(ValueError, match="MuseTalk 1.0 only"):
        MuseTalkRecipe("1.5", 5)
    with pytest.raises(ValueError, match="between -200 and 200"):
        MuseTalkRecipe("1.0", 201)
    with pytest.raises(ValueError, match="one of 1.5, 1.0"):
        MuseTalkRecipe("2.0")


def test_avatars_without_a_recorded_version_were_prepared_for_1_5() -> None:
    assert recipe_version({"recipe": {"landmarks": "dwpose"}}) == "1.5"
    assert recipe_version({"recipe": {"musetalk_version": "1.0"}}) == "1.0"


def preparer(tmp_path, version: str = "1.5", bbox_shift: int = 0) -> Preparer:
    return Preparer(tmp_path, tmp_path, VideoLimits(0, 60, 1920), 0.1, "cpu", version, bbox_shift)


def test_the_default_bbox_shift_applies_to_1_0_from_landmarks_only(tmp_path) -> None:
    shifting = preparer(tmp_path, "1.5", bbox_shift=-7)
    assert shifting.musetalk_recipe() == MuseTalkRecipe("1.5", 0)
    assert shifting.musetalk_recipe(version="1.0") == MuseTalkRecipe("1.0", -7)
    assert shifting.musetalk_recipe((0, 0, 10, 10), "1.0") == MuseTalkRecipe("1.0", 0)
    assert shifting.musetalk_recipe(version="1.0", bbox_shift=3) == MuseTalkRecipe("1.0", 3)


def test_a_request_that_does_not_fit_is_refused_with_422(tmp_path) -> None:
    with pytest.raises(AvatarError, match="MuseTalk 1.0 only") as caught:
        preparer(tmp_path).musetalk_recipe(bbox_shift=4)
    assert caught.value.status == 422
    with pytest.raises(AvatarError, match="given face box") as caught:
        preparer(tmp_path, "1.0").musetalk_recipe((0, 0, 10, 10), bbox_shift=4)
    assert caught.value.status == 422


def test_the_recipe_is_recorded(tmp_path) -> None:
    recorded = preparer(tmp_path, "1.0", bbox_shift=5).recipe(None)
    assert {k: recorded[k] for k in ("musetalk_version", "bbox_shift", "parsing_mode", "extra_margin")} == {
        "musetalk_version": "1.0", "bbox_shift": 5, "parsing_mode": "raw", "extra_margin": 0,
    }
