"""Streamed speech audio as a TTS emits it: its declared format, and incremental decoding.

Raw PCM (`pcm_s16le`, `f32le`, interleaved) at one of `STREAM_SAMPLE_RATES` with 1 or 2
channels is turned into float32 mono at 48 kHz as it arrives, by soxr's streaming
resampler at its quick (cubic) quality: HQ, as file uploads use, holds back ~30 ms and
releases output in ~35 ms blocks, which would delay the first frame by a whole chunk;
the quick one holds back a few samples, and on speech differs from VHQ by -80 dB.
Encoded streams (`mp3`, `ogg_opus`) are decoded incrementally in an isolated decode
worker (server/media/encoded_stream.py, server/isolation), one message at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import soxr

from server.media.clock import AUDIO_SAMPLE_RATE
from server.refusal import Refusal

STREAM_SAMPLE_RATES = (16_000, 22_050, 24_000, 44_100, 48_000)
MAX_STREAM_CHANNELS = 2
PCM_FORMATS = {"pcm_s16le": 2, "f32le": 4}
"""Raw formats and their bytes per sample."""
ENCODED_FORMATS = ("mp3", "ogg_opus")
STREAM_FORMATS = (*PCM_FORMATS, *ENCODED_FORMATS)
S16_SCALE = 32768.0
RESAMPLE_QUALITY = "QQ"


class StreamFormatError(Refusal):
    """A streamed format that cannot be used, or bytes that do not fit it."""

    status = 422


@dataclass(frozen=True)
class StreamFormat:
    format: str
    sample_rate: int
    channels: int

    @classmethod
    def parse(cls, format: object, sample_rate: object, channels: object) -> StreamFormat:
        """Check a declared format (from query parameters or a `start` message)."""
        if format is None:
            raise StreamFormatError(
                "Declare the audio format: format=" + "|".join(STREAM_FORMATS)
                + " (with sample_rate and channels for raw PCM)."
            )
        if format not in STREAM_FORMATS:
            raise StreamFormatError(
                f"Unknown audio format {format!r}; use one of {', '.join(STREAM_FORMATS)}."
            )
        if format in ENCODED_FORMATS:
            return cls(str(format), 0, 0)  # the stream itself says
        rate = _integer(sample_rate, "sample_rate", 24_000)
        if rate not in STREAM_SAMPLE_RATES:
            raise StreamFormatError(
                f"sample_rate {rate} is not supported for raw PCM; use one of "
                f"{', '.join(str(r) for r in STREAM_SAMPLE_RATES)}."
            )
        count = _integer(channels, "channels", 1)
        if not 1 <= count <= MAX_STREAM_CHANNELS:
            raise StreamFormatError(f"channels must be 1 or 2, not {count}.")
        return cls(str(format), rate, count)

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample of every channel (raw PCM)."""
        return PCM_FORMATS[self.format] * self.channels

    def describe(self) -> dict[str, object]:
        if self.format in ENCODED_FORMATS:
            return {"format": self.format}
        return {"format": self.format, "sample_rate": self.sample_rate, "channels": self.channels}


def _integer(value: object, name: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool):
        raise StreamFormatError(f"{name} must be a whole number, not {value!r}.")
    try:
        number = int(str(value))
    except ValueError:
        raise StreamFormatError(f"{name} must be a whole number, not {value!r}.") from None
    return number


class StreamDecoder(Protocol):
    def feed(self, data: bytes) -> np.ndarray:
        """Samples (float32 mono 48 kHz) decodable from what arrived so far."""

    def finish(self) -> np.ndarray:
        """The last samples, at the end of the stream."""


class PcmStreamDecoder:
    """Raw interleaved PCM to float32 mono 48 kHz, chunk by chunk.

    `whole_messages`: every chunk must hold whole sample frames (a WebSocket message);
    otherwise (an HTTP body, cut anywhere) a partial frame waits for the next chunk.
    """

    def __init__(self, declared: StreamFormat, whole_messages: bool) -> None:
        self.declared = declared
        self.whole_messages = whole_messages
        self._rest = b""
        self._resampler = (
            None
            if declared.sample_rate == AUDIO_SAMPLE_RATE
            else soxr.ResampleStream(
                declared.sample_rate, AUDIO_SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY
            )
        )

    def feed(self, data: bytes) -> np.ndarray:
        size = self.declared.frame_bytes
        if self.whole_messages and len(data) % size:
            raise StreamFormatError(
                f"A message of {len(data)} bytes does not hold whole samples of "
                f"{self.declared.format} x {self.declared.channels} channel(s) "
                f"({size} bytes each); send whole samples in every message."
            )
        data = self._rest + data
        whole = len(data) - len(data) % size
        self._rest = data[whole:]
        return self._convert(data[:whole], last=False)

    def finish(self) -> np.ndarray:
        if self._rest:
            raise StreamFormatError(
                f"The stream ends inside a sample ({len(self._rest)} bytes left over); "
                "it must hold whole samples."
            )
        return self._convert(b"", last=True)

    def _convert(self, data: bytes, last: bool) -> np.ndarray:
        if self.declared.format == "pcm_s16le":
            samples = np.frombuffer(data, "<i2").astype(np.float32) / S16_SCALE
        else:
            samples = np.frombuffer(data, "<f4").astype(np.float32)
            samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
            np.clip(samples, -1.0, 1.0, out=samples)
        if self.declared.channels > 1:
            samples = samples.reshape(-1, self.declared.channels).mean(axis=1)
        if self._resampler is None:
            return samples
        return self._resampler.resample_chunk(samples, last=last)
