"""Audio features: whisper-tiny encoder states, and the window of them each video frame sees.

As MuseTalk's `musetalk/utils/audio_processor.py` computes them:

1. the audio at 16 kHz is cut into 30 s segments; each is padded to 30 s, turned into an
   80-bin log-mel spectrogram (`WhisperFeatureExtractor`) and run through whisper-tiny's
   encoder, whose 5 hidden states (the input embedding and the 4 layers' outputs, the last
   one after the final layer norm) give 1500 x 5 x 384 features: 50 per second;
2. features past the end of the audio are dropped; video frame i at `fps` sees the 10
   features starting at `floor(i * 50 / fps) - ceil(50 / fps) * 2` (zeros outside the
   audio), i.e. 2 video frames of context on each side at 25 fps, the only rate MuseTalk
   was trained at. At other rates that window is off the frame (at 10 fps it is the
   200 ms before it), so by default the window keeps its 25 fps shape at every rate:
   `floor(i * 50 / fps) - 4`, centred on the frame as in training (`WindowRule`);
3. those 10 x 5 features become 50 tokens (time-major: token t * 5 + l) and MuseTalk's
   sinusoidal positional encoding is added: the UNet's [50, 384] cross-attention input.

Segments are independent, so computing only the segments a chunk needs gives exactly the
features the whole utterance would: chunk edges change nothing.
"""

from __future__ import annotations

import enum
import json
import math
import weakref
from dataclasses import dataclass

import numpy as np
import soxr
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from server.lipsync.musetalk.checkpoint import load_into, read_state_dict
from server.lipsync.musetalk.weights import MuseTalkWeights
from server.media.clock import AUDIO_SAMPLE_RATE

WHISPER_SAMPLE_RATE = 16_000
FEATURE_RATE = 50
"""Encoder frames per second (whisper's conv stem halves the 100 Hz mel frames)."""
SEGMENT_SECONDS = 30
SEGMENT_SAMPLES = SEGMENT_SECONDS * WHISPER_SAMPLE_RATE
SEGMENT_FEATURES = SEGMENT_SECONDS * FEATURE_RATE

CONTEXT_BEFORE = 2
CONTEXT_AFTER = 2
"""Video frames of audio context each side (realtime_inference.py's audio_padding_length_*)."""
WINDOW_FEATURES = 2 * (CONTEXT_BEFORE + CONTEXT_AFTER + 1)
"""Features per video frame: 10 (two per frame at 25 fps, MuseTalk's training rate)."""
HIDDEN_STATES = 5
FEATURE_DIM = 384
FRAME_TOKENS = WINDOW_FEATURES * HIDDEN_STATES
"""Cross-attention sequence length per video frame: 50."""

POSITIONAL_BASE = 10_000.0
"""The Transformer sinusoid's base (MuseTalk's `PositionalEncoding`)."""

# whisper-tiny checkpoints hold the encoder under one of these prefixes:
# WhisperForConditionalGeneration (openai/whisper-tiny) or WhisperModel.
ENCODER_PREFIXES = ("model.encoder.", "encoder.")


def feature_count(samples_16k: int) -> int:
    """Features MuseTalk keeps for `samples_16k` samples: whole 20 ms steps of audio."""
    return math.floor(samples_16k / WHISPER_SAMPLE_RATE * FEATURE_RATE)


def musetalk_frame_count(samples_16k: int, fps: float) -> int:
    """Video frames MuseTalk makes for `samples_16k` samples at `fps` (whole frames only).

    Sessions make `ceil` frames instead (the last, partial frame too); its window simply
    reaches further into the zeros after the audio.
    """
    return math.floor(samples_16k / WHISPER_SAMPLE_RATE * fps)


class WindowRule(enum.Enum):
    """Where each video frame's 10-feature window starts (MUSETALK_AUDIO_WINDOW)."""

    CENTRED = "centred"
    """4 features (two 25 fps frames) before the frame's first feature, at every fps."""
    MUSETALK = "musetalk"
    """`ceil(50 / fps) * 2` features before it: MuseTalk's realtime inference exactly."""


TRAINING_FEATURES_PER_FRAME = 2
"""Features per video frame at 25 fps, the rate MuseTalk was trained at."""
TRAINING_FPS = 25
STREAM_CONTEXT_SECONDS = 10.0
"""Audio before a chunk of streamed speech that whisper sees (see `MuseTalkEngine`)."""
STREAM_LOOKAHEAD_SECONDS = (CONTEXT_AFTER + 1) / TRAINING_FPS
"""Audio past a frame its features need: its window reaches CONTEXT_AFTER frames (at
25 fps) past it, and the log-mel window and whisper's convolutions about one 40 ms step
further (without that step the last window feature of a streamed frame is off by up to
~70 % of the largest feature; with it, 0.35 %: tests/unit/test_musetalk_streamed_features.py)."""


def window_start(frame: int, fps: float, rule: WindowRule) -> int:
    """First feature (of the unpadded sequence, may be negative) video frame `frame` sees.

    MuseTalk pads `ceil(50 / fps) * 2` zero features in front and takes 10 from
    `floor(frame * 50 / fps)` of the padded sequence. It truncates fps to an integer
    first; session frame rates are integers, so that changes nothing here. The centred
    rule pads 4 whatever the rate; at 25 fps the two are the same.
    """
    step = FEATURE_RATE / fps  # features per video frame, a Python float as in MuseTalk
    before = math.ceil(step) if rule is WindowRule.MUSETALK else TRAINING_FEATURES_PER_FRAME
    return math.floor(frame * step) - before * CONTEXT_BEFORE


def feature_window(frame: int, fps: float, rule: WindowRule) -> range:
    """The features video frame `frame` sees (indices outside the audio read as zeros)."""
    start = window_start(frame, fps, rule)
    return range(start, start + WINDOW_FEATURES)


def positional_encoding(length: int = FRAME_TOKENS, dim: int = FEATURE_DIM) -> torch.Tensor:
    """MuseTalk's sinusoid: [length, dim], sin on even and cos on odd dimensions (float32)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]  # [length, 1]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(POSITIONAL_BASE) / dim))
    encoding = torch.zeros(length, dim)
    encoding[:, 0::2] = torch.sin(position * frequency)
    encoding[:, 1::2] = torch.cos(position * frequency)
    return encoding


@dataclass
class AudioEncoder:
    """whisper-tiny's feature extractor and encoder, on the model's device."""

    extractor: WhisperFeatureExtractor
    encoder: WhisperEncoder
    device: torch.device
    dtype: torch.dtype

    def encode_segment(self, samples: np.ndarray) -> torch.Tensor:
        """Features of up to 30 s of 16 kHz audio: [1500, 5, 384] (past its end: padding)."""
        mel = self.extractor(
            samples, sampling_rate=WHISPER_SAMPLE_RATE, return_tensors="pt"
        ).input_features  # [1, 80, 3000]: zero-padded to 30 s
        hidden = self.encoder(mel.to(self.device, self.dtype), output_hidden_states=True).hidden_states
        return torch.stack(hidden, dim=2)[0]  # 5 x [1, 1500, 384] -> [1500, 5, 384]


def load_audio_encoder(weights: MuseTalkWeights, device: torch.device, dtype: torch.dtype) -> AudioEncoder:
    """whisper-tiny's encoder from `weights.whisper_dir` (the decoder is not loaded)."""
    directory = weights.whisper_dir
    config_path = directory / "config.json"
    extractor_path = directory / "preprocessor_config.json"
    try:
        extractor = WhisperFeatureExtractor(**json.loads(extractor_path.read_text(encoding="utf-8")))
    except (TypeError, ValueError) as error:
        raise weights.error(extractor_path, f"not a WhisperFeatureExtractor configuration ({error})") from error
    try:
        config = WhisperConfig.from_json_file(config_path)
        with torch.device("meta"):
            encoder = WhisperEncoder(config)
    except (TypeError, ValueError, OSError) as error:
        raise weights.error(config_path, f"not a whisper configuration ({error})") from error
    state_path = weights.checkpoint("whisper")
    state = read_state_dict(weights, state_path)
    prefix = next((p for p in ENCODER_PREFIXES if any(k.startswith(p) for k in state)), ENCODER_PREFIXES[0])
    encoder_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    load_into(encoder, encoder_state, weights, state_path, f"a whisper encoder under {prefix!r}", device, dtype)
    return AudioEncoder(extractor, encoder, device, dtype)


class UtteranceAudio:
    """One utterance at 16 kHz and its encoder features, per 30 s segment, made when first needed."""

    def __init__(self, samples_48k: np.ndarray) -> None:
        # soxr HQ is what librosa.load(sr=16000) uses in MuseTalk.
        self.samples = soxr.resample(
            np.asarray(samples_48k, dtype=np.float32), AUDIO_SAMPLE_RATE, WHISPER_SAMPLE_RATE, quality="HQ"
        )
        self.feature_count = feature_count(len(self.samples))
        self.segments: dict[int, torch.Tensor] = {}

    def segment(self, encoder: AudioEncoder, k: int) -> torch.Tensor:
        """Features of segment `k`: [1500, 5, 384]."""
        if k not in self.segments:
            samples = self.samples[k * SEGMENT_SAMPLES : (k + 1) * SEGMENT_SAMPLES]
            self.segments[k] = encoder.encode_segment(samples)
        return self.segments[k]

    def windows(self, encoder: AudioEncoder, starts: torch.Tensor) -> torch.Tensor:
        """Features from `starts` [F] on: [F, 10, 5, 384], zeros outside the audio."""
        index = starts[:, None] + torch.arange(WINDOW_FEATURES)  # [F, 10]
        inside = (index >= 0) & (index < self.feature_count)  # [F, 10]
        out = torch.zeros(*index.shape, HIDDEN_STATES, FEATURE_DIM, device=encoder.device, dtype=encoder.dtype)
        segment_of = torch.where(inside, index // SEGMENT_FEATURES, -1)  # [F, 10]
        for k in torch.unique(segment_of[inside]).tolist():
            here = segment_of == k
            within = (index[here] - k * SEGMENT_FEATURES).to(out.device)
            out[here.to(out.device)] = self.segment(encoder, k)[within]
        return out


class AudioFeatures:
    """Per-frame UNet audio inputs for utterances, remembered while each utterance lives.

    Sessions ask for an utterance's features chunk by chunk, passing the same samples
    array each time; its resampled audio and encoded segments are kept until that array
    is garbage collected, so whisper runs once per 30 s of speech however small the chunks.
    """

    def __init__(self, encoder: AudioEncoder, rule: WindowRule = WindowRule.CENTRED) -> None:
        self.encoder = encoder
        self.rule = rule
        self.positional = positional_encoding().to(encoder.device, encoder.dtype)  # [50, 384]
        self._utterances: dict[int, tuple[weakref.ref[np.ndarray], UtteranceAudio]] = {}

    def frame_features(self, samples_48k: np.ndarray, fps: float, frames: range) -> torch.Tensor:
        """UNet cross-attention inputs of video frames `frames`: [F, 50, 384]."""
        utterance = self.utterance(samples_48k)
        starts = torch.tensor([window_start(j, fps, self.rule) for j in frames], dtype=torch.long)  # [F]
        windows = utterance.windows(self.encoder, starts)  # [F, 10, 5, 384]
        tokens = windows.reshape(len(frames), FRAME_TOKENS, FEATURE_DIM)  # [F, 50, 384], token t*5 + l
        return tokens + self.positional

    def utterance(self, samples_48k: np.ndarray) -> UtteranceAudio:
        key = id(samples_48k)
        entry = self._utterances.get(key)
        if entry is not None and entry[0]() is samples_48k:
            return entry[1]
        utterance = UtteranceAudio(samples_48k)
        forget = lambda _ref, key=key: self._utterances.pop(key, None)  # noqa: E731
        self._utterances[key] = (weakref.ref(samples_48k, forget), utterance)
        return utterance

    @property
    def remembered(self) -> int:
        """Utterances whose features are kept."""
        return len(self._utterances)
