"""The musetalk engine on the CPU with tiny random weights: frames, batches, avatar cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from server.lipsync.demo.face import build_demo_avatar
from server.lipsync.engine import Avatar, LoadedAvatar, RenderRequest
from server.lipsync.musetalk.avatar import CHIN_MARGIN
from server.lipsync.musetalk.engine import MuseTalkEngine, load_musetalk_engine
from server.lipsync.musetalk.weights import MuseTalkWeights
from tests.audio_files import speech_like


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("avatar-cache")


@pytest.fixture(scope="module")
def engine(tiny_models: Path, cache_dir: Path) -> MuseTalkEngine:
    return load_musetalk_engine(MuseTalkWeights(tiny_models, "1.5"), "cpu", cache_dir)


@pytest.fixture(scope="module")
def loaded(engine: MuseTalkEngine) -> LoadedAvatar:
    return engine.load_avatar(build_demo_avatar())


def test_engine_runs_fp32_on_the_cpu_and_says_so(engine: MuseTalkEngine) -> None:
    assert engine.describe() == {
        "engine": "musetalk", "version": "1.5", "device": "cpu", "dtype": "float32", "max_batch": 4,
        "audio_window": "centred",
    }


def test_frames_change_only_inside_the_generation_box(engine: MuseTalkEngine, loaded: LoadedAvatar) -> None:
    features = engine.audio_features(speech_like(1.0), fps=25, frames=range(10))
    assert features[0].shape == (50, 384)
    frame, = engine.render([RenderRequest(loaded, 7, features[5])])
    original = loaded.avatar.frames[7]
    assert frame.shape == original.shape and frame.dtype == np.uint8
    x1, y1, x2, y2 = (int(v) for v in loaded.avatar.face_boxes[7])
    y2 += CHIN_MARGIN["1.5"]
    changed = np.abs(frame.astype(int) - original).max(axis=2) > 0
    assert changed[y1:y2, x1:x2].mean() > 0.2  # random weights: the lower face is noise
    changed[y1:y2, x1:x2] = False
    assert not changed.any()
    # The upper half of the face box is never generated.
    np.testing.assert_array_equal(frame[: (y1 + y2) // 2 - 30], original[: (y1 + y2) // 2 - 30])


def test_the_audio_drives_the_face(engine: MuseTalkEngine, loaded: LoadedAvatar) -> None:
    speech = engine.audio_features(speech_like(1.0), fps=25, frames=range(10))[5]
    silence = engine.audio_features(np.zeros(48_000, np.float32), fps=25, frames=range(10))[5]
    loud, quiet = engine.render([RenderRequest(loaded, 3, speech), RenderRequest(loaded, 3, silence)])
    x1, y1, x2, y2 = (int(v) for v in loaded.avatar.face_boxes[3])
    lower_face = slice((y1 + y2) // 2, y2), slice(x1, x2)
    assert np.abs(loud[lower_face].astype(int) - quiet[lower_face]).mean() > 1


def test_a_batch_renders_what_single_frames_render(engine: MuseTalkEngine, loaded: LoadedAvatar) -> None:
    features = engine.audio_features(speech_like(1.0), fps=25, frames=range(10))
    requests = [RenderRequest(loaded, i, features[i]) for i in (0, 4, 9)]
    batched = engine.render(requests)
    single = [engine.render([request])[0] for request in requests]
    for b, s in zip(batched, single):
        assert np.abs(b.astype(int) - s).max() <= 1


def small_avatar(avatar_id: str = "small") -> Avatar:
    """Four frames of the demo avatar at half size: quick to prepare."""
    demo = build_demo_avatar()
    return Avatar(avatar_id, demo.frames[:4, ::2, ::2].copy(), demo.face_boxes[:4] // 2)


def test_avatars_of_different_sizes_share_a_batch(engine: MuseTalkEngine, loaded: LoadedAvatar) -> None:
    other = engine.load_avatar(small_avatar())
    features = engine.audio_features(speech_like(1.0), fps=25, frames=range(2))
    frames = engine.render([RenderRequest(loaded, 1, features[0]), RenderRequest(other, 1, features[1])])
    assert [f.shape for f in frames] == [(512, 512, 3), (256, 256, 3)]


def test_avatar_latents_are_cached_on_disk_and_reused(
    tiny_models: Path, engine: MuseTalkEngine, loaded: LoadedAvatar, cache_dir: Path
) -> None:
    files = sorted(cache_dir.glob("demo-musetalk1.5-*.pt"))
    assert len(files) == 1
    again = load_musetalk_engine(MuseTalkWeights(tiny_models, "1.5"), "cpu", cache_dir)
    reloaded = again.load_avatar(build_demo_avatar())
    assert torch.equal(reloaded.engine_state.latents, loaded.engine_state.latents)
    assert sorted(cache_dir.glob("demo-musetalk1.5-*.pt")) == files  # read, not recomputed



def test_a_changed_avatar_gets_new_latents(engine: MuseTalkEngine, cache_dir: Path) -> None:
    avatar = small_avatar("changing")
    first = engine.load_avatar(avatar).engine_state.latents
    avatar.frames[0, 100:140, 100:140] = 255
    second = engine.load_avatar(avatar).engine_state.latents
    assert len(list(cache_dir.glob("changing-musetalk1.5-*.pt"))) == 2
    assert not torch.equal(first[0], second[0])
    assert torch.equal(first[1:], second[1:])


def test_a_damaged_cache_file_is_recomputed(tiny_models: Path, tmp_path: Path) -> None:
    engine = load_musetalk_engine(MuseTalkWeights(tiny_models, "1.0"), "cpu", tmp_path)
    avatar = small_avatar()
    first = engine.load_avatar(avatar).engine_state.latents
    (path,) = tmp_path.glob("small-musetalk1.0-*.pt")
    path.write_bytes(b"not a cache file")
    assert torch.equal(engine.load_avatar(avatar).engine_state.latents, first)
    assert path.stat().st_size > 100
