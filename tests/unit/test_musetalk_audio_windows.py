"""MuseTalk's audio window rule: which whisper features each video frame sees.

Expected values are worked out by hand from MuseTalk's `get_whisper_chunk`
(musetalk/utils/audio_processor.py): 50 features per second; MuseTalk makes
floor(seconds * fps) frames and keeps floor(seconds * 50) features; it pads
ceil(50 / fps) * 2 zero features in front and gives frame i the 10 features from
floor(i * 50 / fps) of the padded sequence. Windows below are in unpadded indices
(padded index minus the front padding).
"""

from __future__ import annotations

import pytest
import torch

from server.lipsync.musetalk.audio import (
    FRAME_TOKENS,
    WINDOW_FEATURES,
    WindowRule,
    feature_count,
    feature_window,
    musetalk_frame_count,
    positional_encoding,
)

SECOND = 16_000  # samples at whisper's rate


@pytest.mark.parametrize(
    ("samples", "fps", "frames", "features"),
    [
        (SECOND, 25, 25, 50),
        (SECOND // 2, 25, 12, 25),
        (16_480, 25, 25, 51),  # 1.03 s: 25.75 frames, whole ones only
        (40_000, 25, 62, 125),  # 2.5 s
        (SECOND, 10, 10, 50),
        (SECOND, 30, 30, 50),
        (SECOND, 24, 24, 50),
        (30 * SECOND, 25, 750, 1500),  # exactly one whisper segment
        (30 * SECOND + 1, 25, 750, 1500),  # one sample into a second segment
        (50 * SECOND, 25, 1250, 2500),
    ],
)
def test_frame_and_feature_counts_follow_musetalk(samples: int, fps: int, frames: int, features: int) -> None:
    assert musetalk_frame_count(samples, fps) == frames
    assert feature_count(samples) == features


@pytest.mark.parametrize(
    ("fps", "frame", "first"),
    [
        # 25 fps: 2 features per frame, 4 in front: centred on the frame (2 frames each side).
        (25, 0, -4),
        (25, 1, -2),
        (25, 24, 44),
        (25, 61, 118),
        (25, 749, 1494),
        # 10 fps: 5 features per frame and 10 in front: the 200 ms before the frame.
        (10, 0, -10),
        (10, 1, -5),
        (10, 9, 35),
        # 30 fps: 1.667 features per frame, floored; 4 in front.
        (30, 1, -3),
        (30, 2, -1),
        (30, 3, 1),  # 3 * 50 / 30 is exactly 5.0 in floating point
        (30, 29, 44),
        # 24 fps: 2.083 features per frame, ceil gives 3: 6 in front.
        (24, 0, -6),
        (24, 1, -4),
        (24, 23, 41),
        # 60 fps: less than one feature per frame: neighbours can share a window.
        (60, 0, -2),
        (60, 1, -2),
    ],
)
def test_window_of_each_frame_matches_hand_computed_cases(fps: int, frame: int, first: int) -> None:
    assert feature_window(frame, fps, WindowRule.MUSETALK) == range(first, first + WINDOW_FEATURES)


@pytest.mark.parametrize(
    ("fps", "frame", "first"),
    [
        # 25 fps: the same as MuseTalk's realtime rule.
        (25, 0, -4),
        (25, 1, -2),
        (25, 749, 1494),
        # 10 fps: frame i's audio is features 5i .. 5i+4; 4 before its first, 6 from it.
        (10, 0, -4),
        (10, 1, 1),
        (10, 9, 41),
        # 30 fps: floor(i * 5 / 3) - 4.
        (30, 1, -3),
        (30, 3, 1),
        # 24 fps: floor(i * 2.0833) - 4.
        (24, 0, -4),
        (24, 1, -2),
        (24, 23, 43),
    ],
)
def test_centred_window_keeps_the_training_shape_at_every_rate(fps: int, frame: int, first: int) -> None:
    assert feature_window(frame, fps, WindowRule.CENTRED) == range(first, first + WINDOW_FEATURES)


def test_a_window_is_ten_features_of_five_hidden_states() -> None:
    assert WINDOW_FEATURES == 10
    assert FRAME_TOKENS == 50


def test_positional_encoding_is_musetalks_sinusoid() -> None:
    encoding = positional_encoding()
    assert encoding.shape == (50, 384)
    expected = {
        (0, 0): 0.0, (0, 1): 1.0, (0, 383): 1.0,
        (1, 0): 0.841471, (1, 1): 0.540302, (1, 2): 0.815251, (1, 3): 0.579108, (1, 382): 0.000105,
        (2, 0): 0.909297, (2, 1): -0.416147, (2, 2): 0.944237, (2, 3): -0.329267,
        (49, 0): -0.953753, (49, 1): 0.300593, (49, 2): 0.406808, (49, 3): -0.913514,
        (49, 382): 0.005141, (49, 383): 0.999987,
    }
    for (position, dim), value in expected.items():
        assert encoding[position, dim].item() == pytest.approx(value, abs=2e-6), (position, dim)
    assert torch.all(encoding.abs() <= 1)
