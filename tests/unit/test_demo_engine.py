"""The demo engine: the mouth follows the loudness, frame by frame."""

from __future__ import annotations

import numpy as np
import pytest

from server.lipsync.demo.engine import DemoEngine
from server.lipsync.demo.face import DEMO_FRAME_COUNT, build_demo_avatar
from server.lipsync.engine import RenderRequest
from tests.audio_files import speech_like
from tests.webrtc_client import mouth_dark_share


@pytest.fixture(scope="module")
def engine() -> DemoEngine:
    return DemoEngine()


@pytest.fixture(scope="module")
def loaded(engine: DemoEngine):
    return engine.load_avatar(build_demo_avatar())


def test_demo_avatar_has_a_living_idle_loop() -> None:
    avatar = build_demo_avatar()
    assert avatar.frames.shape == (DEMO_FRAME_COUNT, 512, 512, 3)
    assert len(avatar.cycle) == 2 * DEMO_FRAME_COUNT - 2
    # It sways and blinks: frames differ, and the mouth stays closed.
    assert np.abs(avatar.frames[0].astype(int) - avatar.frames[12]).max() > 50
    assert all(mouth_dark_share(frame) < 0.03 for frame in avatar.frames)


def test_opening_follows_the_loudness_of_each_frame(engine: DemoEngine) -> None:
    audio = speech_like(2.0, bursts=[(0.5, 1.0)])
    openings = engine.audio_features(audio, fps=10, frames=range(20))
    assert openings[:5] == [0.0] * 5
    assert min(openings[5:10]) > 0.5
    assert openings[10:] == [0.0] * 10
    quieter = engine.audio_features(audio * 0.1, fps=10, frames=range(5, 10))
    assert all(q < o for q, o in zip(quieter, openings[5:10]))


def test_render_opens_the_mouth_in_the_avatar_frame(engine: DemoEngine, loaded) -> None:
    closed, half, wide = engine.render(
        [RenderRequest(loaded, 7, 0.0), RenderRequest(loaded, 7, 0.5), RenderRequest(loaded, 7, 1.0)]
    )
    assert closed.shape == (512, 512, 3) and closed.dtype == np.uint8
    assert mouth_dark_share(closed) < 0.03 < mouth_dark_share(half) < mouth_dark_share(wide)
    # Outside the mouth the frame is the avatar's own frame.
    frame = loaded.avatar.frames[7]
    np.testing.assert_array_equal(wide[:250], frame[:250])
