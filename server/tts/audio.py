"""What a backend's audio becomes: float32 mono at 48 kHz (raw PCM16 and WAV in)."""

from __future__ import annotations

import numpy as np
import soxr

from server.media.audio_input import SAMPLE_RATE

PCM16_SCALE = 32768.0


class WavFormatError(ValueError):
    """Bytes that are not a PCM WAV file this module reads."""


def to_output_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    """float32 mono `samples` at `rate`, resampled (soxr) to `SAMPLE_RATE`, in [-1, 1]."""
    samples = np.asarray(samples, np.float32)
    if rate != SAMPLE_RATE and len(samples):
        samples = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ")
    return np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False)


def pcm16_samples(data: bytes, channels: int = 1) -> np.ndarray:
    """Little-endian signed 16-bit PCM as float32 mono (channels averaged)."""
    usable = len(data) - len(data) % (2 * channels)
    pcm = np.frombuffer(data[:usable], "<i2").astype(np.float32) / PCM16_SCALE
    return pcm.reshape(-1, channels).mean(axis=1) if channels > 1 else pcm


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV file as (float32 mono samples, rate).

    Streamed WAV (espeak-ng's `--stdout`, HTTP services) declares an unknown or too large
    data size: the data chunk is then whatever follows its header.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavFormatError("not a RIFF/WAVE file")
    offset, rate, channels, bits = 12, 0, 0, 0
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        size = int.from_bytes(data[offset + 4 : offset + 8], "little")
        body = offset + 8
        if chunk_id == b"fmt ":
            fmt = data[body : body + 16]
            if len(fmt) < 16:
                raise WavFormatError("truncated fmt chunk")
            tag = int.from_bytes(fmt[0:2], "little")
            channels = int.from_bytes(fmt[2:4], "little")
            rate = int.from_bytes(fmt[4:8], "little")
            bits = int.from_bytes(fmt[14:16], "little")
            if tag not in (1, 0xFFFE) or bits != 16 or not channels or not rate:
                raise WavFormatError(f"not 16-bit PCM (format {tag}, {bits} bits)")
        elif chunk_id == b"data":
            if not rate:
                raise WavFormatError("data before the fmt chunk")
            return pcm16_samples(data[body : body + size], channels), rate
        offset = body + size + (size & 1)
    raise WavFormatError("no data chunk")
