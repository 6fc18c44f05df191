"""MuseTalk audio features: whisper hidden states in windows, whatever the chunking."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from server.lipsync.musetalk.audio import (
    SEGMENT_FEATURES,
    AudioFeatures,
    AudioEncoder,
    load_audio_encoder,
    positional_encoding,
)
from server.lipsync.musetalk.weights import MuseTalkWeights
from tests.audio_files import speech_like


@pytest.fixture(scope="module")
def encoder(tiny_models: Path) -> AudioEncoder:
    return load_audio_encoder(MuseTalkWeights(tiny_models, "1.5"), torch.device("cpu"), torch.float32)


def test_tokens_are_hidden_states_in_time_major_order_plus_position(encoder: AudioEncoder) -> None:
    audio = speech_like(1.0)
    tokens = AudioFeatures(encoder).frame_features(audio, fps=25, frames=range(5, 6))[0]  # [50, 384]

    # whisper's hidden states, written out: embeddings, layers 1-3, layer 4 after the final norm.
    utterance = AudioFeatures(encoder).utterance(audio)
    mel = encoder.extractor(utterance.samples, sampling_rate=16_000, return_tensors="pt").input_features
    whisper = encoder.encoder
    with torch.inference_mode():
        x = F.gelu(whisper.conv2(F.gelu(whisper.conv1(mel)))).permute(0, 2, 1) + whisper.embed_positions.weight
        states = [x]
        for layer in whisper.layers:
            x = layer(x, None)
            states.append(x)
        states[-1] = whisper.layer_norm(states[-1])
    hidden = torch.stack(states, dim=2)[0]  # [1500, 5, 384]

    # Frame 5 at 25 fps sees features 6 .. 15; token t * 5 + l is feature 6 + t, state l.
    expected = hidden[6:16].reshape(50, 384) + positional_encoding()
    torch.testing.assert_close(tokens, expected, rtol=1e-4, atol=1e-4)


def test_windows_reaching_outside_the_audio_read_zeros(encoder: AudioEncoder) -> None:
    audio = speech_like(1.0)
    first, last = AudioFeatures(encoder).frame_features(audio, fps=25, frames=range(0, 30, 29))
    position = positional_encoding()
    # Frame 0 sees features -4 .. 5: its first 4 time steps (20 tokens) are padding.
    torch.testing.assert_close(first[:20], position[:20])
    assert not torch.allclose(first[20:], position[20:])
    # Frame 29 (past MuseTalk's 25 frames of a 1 s utterance) sees features 54 .. 63: none exist.
    torch.testing.assert_close(last, position)


def test_chunked_features_equal_the_whole_utterance_at_once(encoder: AudioEncoder) -> None:
    audio = speech_like(3.0)
    whole = AudioFeatures(encoder).frame_features(audio, fps=25, frames=range(75))
    features = AudioFeatures(encoder)
    chunks = [features.frame_features(audio, fps=25, frames=range(a, b)) for a, b in [(0, 20), (20, 50), (50, 75)]]
    assert torch.equal(torch.cat(chunks), whole)


def test_chunks_across_a_30_second_segment_boundary_equal_the_whole(encoder: AudioEncoder) -> None:
    audio = speech_like(31.0)
    # Frames 745 .. 754 at 25 fps see features 1486 .. 1513: both segments.
    frames = range(745, 755)
    whole = AudioFeatures(encoder).frame_features(audio, fps=25, frames=range(0, 775))[745:755]
    alone = AudioFeatures(encoder).frame_features(audio, fps=25, frames=frames)
    assert torch.equal(alone, whole)
    assert SEGMENT_FEATURES == 1500


def test_features_are_kept_while_the_utterance_lives(encoder: AudioEncoder) -> None:
    features = AudioFeatures(encoder)
    audio = speech_like(2.0)
    features.frame_features(audio, fps=10, frames=range(0, 10))
    first = features.utterance(audio)
    features.frame_features(audio, fps=10, frames=range(10, 20))
    assert features.utterance(audio) is first
    assert len(first.segments) == 1
    assert features.remembered == 1

    other = np.array(audio)  # equal samples, another utterance
    assert features.utterance(other) is not first
    del audio, first, other
    gc.collect()
    assert features.remembered == 0
