"""MuseTalk features of streamed speech (a sliding whisper context) against the whole file's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from server.lipsync.musetalk.audio import (
    CONTEXT_AFTER,
    STREAM_CONTEXT_SECONDS,
    STREAM_LOOKAHEAD_SECONDS,
    TRAINING_FPS,
    AudioEncoder,
    AudioFeatures,
    load_audio_encoder,
    positional_encoding,
)
from server.lipsync.musetalk.weights import MuseTalkWeights
from server.media.utterance import Utterance
from server.sessions.streamed_speech import audio_window, lookahead_frames
from tests.audio_files import speech_like

FPS = 25
CHUNK_SAMPLES = 960  # 20 ms at 48 kHz, as a TTS streams
# The largest difference a streamed frame's features may have from the whole file's,
# relative to the largest feature (positional encoding left out) of the whole file.
MAX_RELATIVE_DIFFERENCE = 0.01


@pytest.fixture(scope="module")
def encoder(tiny_models: Path) -> AudioEncoder:
    return load_audio_encoder(MuseTalkWeights(tiny_models, "1.5"), torch.device("cpu"), torch.float32)


def streamed_features(
    features: AudioFeatures, audio: np.ndarray, context_seconds: float, lookahead_seconds: float
) -> torch.Tensor:
    """Each frame's features computed as soon as its audio and look-ahead has arrived."""
    utterance = Utterance(np.zeros(0, np.float32), FPS, 0, 2.0, complete=False,
                          lookahead_frames=lookahead_frames(lookahead_seconds, FPS))
    out: list[torch.Tensor] = []
    for start in range(0, len(audio), CHUNK_SAMPLES):
        utterance.append(audio[start : start + CHUNK_SAMPLES])
        out += _render_available(features, utterance, len(out), context_seconds)
    utterance.end()
    out += _render_available(features, utterance, len(out), context_seconds)
    return torch.stack(out)


def _render_available(features: AudioFeatures, utterance: Utterance, done: int, context: float) -> list[torch.Tensor]:
    frames = range(done, utterance.available_frames)
    if not frames:
        return []
    window, shifted = audio_window(utterance.samples, FPS, frames, context)
    return list(features.frame_features(window, FPS, shifted).unbind(0))


def test_streamed_features_differ_little_from_the_whole_files(encoder: AudioEncoder) -> None:
    audio = speech_like(4.0)
    features = AudioFeatures(encoder)
    whole = features.frame_features(audio, FPS, range(100))
    streamed = streamed_features(features, audio, STREAM_CONTEXT_SECONDS, STREAM_LOOKAHEAD_SECONDS)
    assert streamed.shape == whole.shape
    position = positional_encoding()
    scale = float((whole - position).abs().max())
    difference = (streamed - whole).abs()
    relative = float(difference.max()) / scale
    print(f"streamed vs whole-file MuseTalk features: max abs {float(difference.max()):.4g}, "
          f"relative {relative:.4g}, mean abs {float(difference.mean()):.4g} (scale {scale:.4g})")
    assert relative < MAX_RELATIVE_DIFFERENCE


def test_the_window_alone_is_not_look_ahead_enough(encoder: AudioEncoder) -> None:
    """Only the feature window's own reach (CONTEXT_AFTER frames) leaves the last feature
    of each frame computed next to the end of the audio: far off. Hence the extra step."""
    audio = speech_like(2.0)
    features = AudioFeatures(encoder)
    whole = features.frame_features(audio, FPS, range(50))
    streamed = streamed_features(features, audio, STREAM_CONTEXT_SECONDS, CONTEXT_AFTER / TRAINING_FPS)
    scale = float((whole - positional_encoding()).abs().max())
    assert float((streamed - whole).abs().max()) / scale > 10 * MAX_RELATIVE_DIFFERENCE


def test_a_window_starts_on_a_whole_second_before_its_context() -> None:
    audio = np.arange(5 * 48_000, dtype=np.float32)
    window, shifted = audio_window(audio, FPS, range(60, 62), context_seconds=1.0)
    # Frame 60 is at 2.4 s; 1 s before it is 1.4 s, rounded down to 1 s.
    assert shifted == range(35, 37)
    assert window[0] == 48_000 and len(window) == 4 * 48_000
    window, shifted = audio_window(audio, FPS, range(10, 12), context_seconds=1.0)
    assert shifted == range(10, 12) and len(window) == len(audio)
