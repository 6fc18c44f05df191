"""Speech-like test audio, generated and encoded in memory with PyAV."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np

# container format, codec, file suffix, encoder sample rate
FORMATS: dict[str, tuple[str, str, int]] = {
    "wav": ("wav", "pcm_s16le", 44_100),
    "mp3": ("mp3", "libmp3lame", 44_100),
    "m4a": ("ipod", "aac", 44_100),
    "ogg": ("ogg", "libopus", 48_000),
    "flac": ("flac", "flac", 44_100),
    "webm": ("webm", "libopus", 48_000),
}


def speech_like(
    seconds: float,
    rate: int = 48_000,
    bursts: list[tuple[float, float]] | None = None,
    amplitude: float = 0.5,
) -> np.ndarray:
    """Voiced bursts (a 140 Hz buzz with formant-like partials) separated by silence.

    `bursts` lists (start, end) seconds of sound; by default 0.4 s on, 0.4 s off.
    """
    n = int(seconds * rate)
    t = np.arange(n) / rate
    if bursts is None:
        bursts = [(s, s + 0.4) for s in np.arange(0.0, seconds, 0.8)]
    envelope = np.zeros(n)
    for start, end in bursts:
        envelope[int(start * rate) : int(end * rate)] = 1.0
    f0 = 140 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in (1, 2, 3, 5, 7))
    signal = amplitude * envelope * voice / 1.6
    return signal.astype(np.float32)


def encode(samples: np.ndarray, kind: str, rate: int = 48_000, channels: int = 1) -> bytes:
    """`samples` (float32 mono at `rate`) encoded as a `kind` file (a key of FORMATS)."""
    fmt, codec, out_rate = FORMATS[kind]
    layout = "mono" if channels == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=out_rate, layout=layout)
        resampler = av.AudioResampler(
            format=stream.codec_context.format.name, layout=layout, rate=out_rate
        )
        planar = np.repeat(samples[None, :].astype(np.float32), channels, axis=0)
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.time_base = Fraction(1, rate)
        frame.pts = 0
        for converted in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(converted):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()
