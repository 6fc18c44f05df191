"""Audio files a careless or hostile client sends: many channels, lies, bombs, NaN."""

from __future__ import annotations

import io
import struct
from fractions import Fraction

import av
import numpy as np
from av.audio.plane import AudioPlane

WAVE_FORMAT_PCM = 1
WAVE_FORMAT_IEEE_FLOAT = 3
# Where a FLAC file's STREAMINFO keeps its 36-bit total sample count (after "fLaC", the
# block header and 13.5 bytes of sizes, rate, channels and depth).
FLAC_TOTAL_SAMPLES_AT = 4 + 4 + 13
AAC_FRAME_SAMPLES = 1024


def wav(
    samples: np.ndarray,
    rate: int,
    format_tag: int = WAVE_FORMAT_PCM,
    bits: int = 16,
    channels: int | None = None,
) -> bytes:
    """A RIFF/WAVE file of `samples` ([N, C] in [-1, 1]) stored as `format_tag`/`bits`.

    `channels` (default: the array's) is what the header declares, true or not.
    """
    frames = samples if samples.ndim == 2 else samples[:, None]
    declared = frames.shape[1] if channels is None else channels
    if format_tag == WAVE_FORMAT_IEEE_FLOAT:
        body = frames.astype("<f4" if bits == 32 else "<f8").tobytes()
    elif bits == 16:
        body = (np.clip(frames, -1, 1) * 32767).astype("<i2").tobytes()
    else:
        body = bytes(len(frames) * frames.shape[1] * bits // 8)
    return _riff(body, rate, format_tag, bits, declared)


def raw_wav(values: np.ndarray, rate: int) -> bytes:
    """A mono RIFF/WAVE file holding `values` as they are: 8-bit unsigned, 16/32-bit
    signed, or 32/64-bit float samples (the array's dtype)."""
    tag = WAVE_FORMAT_IEEE_FLOAT if values.dtype.kind == "f" else WAVE_FORMAT_PCM
    body = values.astype(values.dtype.newbyteorder("<")).tobytes()
    return _riff(body, rate, tag, values.dtype.itemsize * 8, 1)


def _riff(body: bytes, rate: int, format_tag: int, bits: int, channels: int) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", format_tag, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    """A 220 Hz tone at half scale, [N, channels]."""
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.5 * np.sin(2 * np.pi * 220 * t)
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32)


def encoded(
    seconds: float, rate: int, layout: str, fmt: str = "flac", codec: str = "flac", silent: bool = False
) -> bytes:
    """`seconds` of a tone (or silence) encoded with `codec` in container `fmt`."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        context = stream.codec_context
        channels = context.layout.nb_channels
        sample_format = context.format.name
        block = context.frame_size or 4608
        total = int(seconds * rate)
        dtype = {"s16": np.int16, "s32": np.int32, "flt": np.float32}[sample_format.removesuffix("p")]
        for start in range(0, total, block):
            n = min(block, total - start)
            if silent:
                mono = np.zeros(n)
            else:
                mono = 0.5 * np.sin(2 * np.pi * 220 * (start + np.arange(n)) / rate)
            scaled = mono * (32767 if dtype is np.int16 else 2**31 - 1 if dtype is np.int32 else 1)
            planes = np.repeat(scaled[None, :], channels, axis=0).astype(dtype)
            array = planes if sample_format.endswith("p") else planes.T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(array), format=sample_format, layout=layout)
            frame.sample_rate = rate
            frame.time_base = Fraction(1, rate)
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def without_flac_length(data: bytes) -> bytes:
    """A FLAC file whose STREAMINFO says nothing of its length (allowed: "unknown")."""
    out = bytearray(data)
    assert out[:4] == b"fLaC"
    at = FLAC_TOTAL_SAMPLES_AT
    out[at] &= 0xF0  # the high 4 bits of the count share a byte with the sample depth
    out[at + 1 : at + 5] = bytes(4)
    return bytes(out)


def planar_aac_7_1(seconds: float) -> bytes:
    """7.1 AAC: eight planar float channels, the layout FFmpeg's resampler crashed on.

    Built plane by plane: PyAV's own `from_ndarray` cannot make frames of 8+ planes.
    """
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="adts") as container:
        stream = container.add_stream("aac", rate=48_000, layout="7.1")
        size = AAC_FRAME_SAMPLES
        for k in range(int(seconds * 48_000 / size)):
            frame = av.AudioFrame(format="fltp", layout="7.1", samples=size)
            frame.sample_rate, frame.pts, frame.time_base = 48_000, k * size, Fraction(1, 48_000)
            t = (k * size + np.arange(size)) / 48_000
            plane = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32).tobytes()
            for index in range(8):
                AudioPlane(frame, index).update(plane)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()
