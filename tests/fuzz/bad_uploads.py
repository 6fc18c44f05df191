"""A battery of bad uploads to `POST /webrtc/sessions/{id}/stream`, generated from a seed.

Nothing is stored: real files are encoded with PyAV when the battery is built, then cut,
flipped, relabelled and wrapped in odd requests. The same seed gives the same cases.
"""

from __future__ import annotations

import enum
import io
import json
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np

from tests.audio_files import speech_like

FIELD = "audio_file"
SPOKEN_SECONDS = 0.3
"""Length of every real file: short, so an accepted one is spoken quickly."""

# container format, codec, file name, Content-Type, encoder rate, channel layout
CONTAINERS: dict[str, tuple[str, str, str, str, int, str]] = {
    "wav": ("wav", "pcm_s16le", "speech.wav", "audio/wav", 44_100, "mono"),
    "mp3": ("mp3", "libmp3lame", "speech.mp3", "audio/mpeg", 44_100, "mono"),
    "m4a": ("ipod", "aac", "speech.m4a", "audio/mp4", 44_100, "mono"),
    "opus": ("ogg", "libopus", "speech.opus", "audio/ogg", 48_000, "mono"),
    "vorbis": ("ogg", "vorbis", "speech.ogg", "audio/ogg", 44_100, "stereo"),
    "flac": ("flac", "flac", "speech.flac", "audio/flac", 44_100, "mono"),
    "webm": ("webm", "libopus", "speech.webm", "audio/webm", 48_000, "mono"),
}
# FFmpeg's own Vorbis encoder is marked experimental (and only encodes stereo).
ENCODER_OPTIONS = {"vorbis": {"strict": "experimental"}}

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
FLAC_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}


class Expect(enum.Enum):
    REFUSED = "a 4xx with a JSON detail"
    ACCEPTED = "200: it is valid audio"
    EITHER = "200 or a 4xx with a JSON detail"


@dataclass(frozen=True)
class UploadCase:
    name: str
    category: str
    request: dict[str, Any]
    """Keyword arguments of `httpx.AsyncClient.post`: files, data, content, headers."""
    expect: Expect = Expect.REFUSED
    known_issue: str | None = None
    """The decode defect (issue 8) this input is known to hit on a server without the fix."""
    tags: tuple[str, ...] = field(default=())


# Known decode defects, for the report.
MANY_CHANNELS = "8+ channels: segfault in av.AudioResampler"
UNKNOWN_WAV_FORMAT = "unknown WAV format tag or bit depth: 500"
DAMAGED_WEBM = "damaged WebM: 500 'AudioStream' object has no attribute 'rate'"
NON_FINITE_FLOAT = "NaN/Inf float WAV accepted"


# --- real files ---------------------------------------------------------------------------


def encode(kind: str, seconds: float = SPOKEN_SECONDS) -> bytes:
    """Speech-like audio as a `kind` file (a key of CONTAINERS), through PyAV."""
    fmt, codec, _, _, rate, layout = CONTAINERS[kind]
    channels = 2 if layout == "stereo" else 1
    samples = np.repeat(speech_like(seconds, rate, bursts=[(0.0, seconds)])[None, :], channels, axis=0)
    return _encode(samples, rate, fmt, codec, layout, ENCODER_OPTIONS.get(kind))


def _encode(
    planar: np.ndarray, rate: int, fmt: str, codec: str, layout: str, options: dict[str, str] | None
) -> bytes:
    """`planar` float32 [channels, n] at `rate`, encoded (mono or stereo only: PyAV's
    resampler is not trusted with more channels)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout, options=options or {})
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout=layout, rate=rate)
        step = rate  # one second per frame
        for start in range(0, planar.shape[1], step):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planar[:, start : start + step]), format="fltp", layout=layout
            )
            frame.sample_rate = rate
            frame.time_base = Fraction(1, rate)
            frame.pts = start
            for converted in resampler.resample(frame):
                for packet in stream.encode(converted):
                    container.mux(packet)
        for converted in resampler.resample(None):
            for packet in stream.encode(converted):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def flac(interleaved: np.ndarray, rate: int) -> bytes:
    """int16 [n, channels] (1, 2, 6 or 8 channels) as FLAC, frames fed as packed s16."""
    channels = interleaved.shape[1]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate, layout=FLAC_LAYOUTS[channels])
        step = 1 << 16
        for start in range(0, len(interleaved), step):
            piece = np.ascontiguousarray(interleaved[start : start + step]).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(piece, format="s16", layout=FLAC_LAYOUTS[channels])
            frame.sample_rate = rate
            frame.time_base = Fraction(1, rate)
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def wav(
    payload: bytes,
    *,
    rate: int = 44_100,
    channels: int = 1,
    bits: int = 16,
    format_tag: int = WAVE_FORMAT_PCM,
    data_size: int | None = None,
    riff_size: int | None = None,
    block_align: int | None = None,
    byte_rate: int | None = None,
    fmt_extra: bytes = b"",
    chunks_before_data: bytes = b"",
) -> bytes:
    """A RIFF/WAVE file around `payload`, every header field settable to a lie."""
    align = block_align if block_align is not None else channels * bits // 8
    rate_bytes = byte_rate if byte_rate is not None else rate * align
    fmt_body = struct.pack(
        "<HHIIHH", format_tag, channels & 0xFFFF, rate & 0xFFFFFFFF, rate_bytes & 0xFFFFFFFF,
        align & 0xFFFF, bits & 0xFFFF,
    ) + fmt_extra
    fmt_chunk = b"fmt " + struct.pack("<I", len(fmt_body)) + fmt_body
    size = len(payload) if data_size is None else data_size
    data_chunk = b"data" + struct.pack("<I", size & 0xFFFFFFFF) + payload
    body = b"WAVE" + fmt_chunk + chunks_before_data + data_chunk
    riff = len(body) if riff_size is None else riff_size
    return b"RIFF" + struct.pack("<I", riff & 0xFFFFFFFF) + body


def pcm16(seconds: float, rate: int, channels: int) -> bytes:
    mono = speech_like(seconds, max(rate, 1), bursts=[(0.0, seconds)]) if rate >= 100 else np.zeros(
        max(1, int(seconds * rate)), np.float32
    )
    interleaved = np.repeat(mono[:, None], channels, axis=1)
    return (interleaved * 20_000).astype("<i2").tobytes()


# --- requests -----------------------------------------------------------------------------


def file_upload(data: bytes, filename: str = "speech.wav", content_type: str = "audio/wav") -> dict[str, Any]:
    return {"files": [(FIELD, (filename, data, content_type))]}


def raw_body(content: bytes, content_type: str | None) -> dict[str, Any]:
    headers = {"content-type": content_type} if content_type is not None else {}
    return {"content": content, "headers": headers}


def multipart(parts: list[bytes], boundary: str = "fuzzboundary7MA4YWxk") -> dict[str, Any]:
    """A hand-made multipart body: each part is its raw headers, a blank line and content."""
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    body += b"--" + boundary.encode() + b"--\r\n"
    return raw_body(body, f"multipart/form-data; boundary={boundary}")


def part(name: str, content: bytes, filename: str | None = "speech.wav", content_type: str | None = "audio/wav") -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    headers = [disposition] + ([f"Content-Type: {content_type}"] if content_type else [])
    return "\r\n".join(headers).encode() + b"\r\n\r\n" + content


# --- the battery --------------------------------------------------------------------------


def battery(seed: int, max_upload_bytes: int, max_audio_seconds: float) -> list[UploadCase]:
    """Every case, in a fixed order for `seed`."""
    rng = random.Random(seed)
    real = {kind: encode(kind) for kind in CONTAINERS}
    cases: list[UploadCase] = []
    for generate in (
        _random_bytes,
        _truncated,
        _bit_flipped,
        _lying_labels,
        _lying_wav_headers,
        _extreme_formats,
        _declared_sizes,
        _compression_bombs,
        _non_multipart,
        _form_fields,
    ):
        cases.extend(generate(rng, real, max_upload_bytes, max_audio_seconds))
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


MAGIC_PREFIXES = {
    "riff": b"RIFF\x24\x08\x00\x00WAVEfmt ",
    "id3": b"ID3\x04\x00\x00\x00\x00\x00\x00",
    "mpeg-sync": b"\xff\xfb\x90\x64",
    "flac": b"fLaC\x00\x00\x00\x22",
    "ogg": b"OggS\x00\x02",
    "ebml": b"\x1a\x45\xdf\xa3",
    "ftyp": b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00",
    "adts": b"\xff\xf1\x50\x80",
}


def _random_bytes(rng: random.Random, real: dict[str, bytes], *_: Any) -> Iterator[UploadCase]:
    for i in range(24):
        size = rng.choice([1, 2, 3, 7, 16, 64, 512, 4096, 20_000, 65_536])
        data = rng.randbytes(size)
        yield UploadCase(f"random-{i}-{size}B", "random bytes", file_upload(data, f"noise{i}.bin", "application/octet-stream"))
    for magic, prefix in MAGIC_PREFIXES.items():
        for i in range(5):
            data = prefix + rng.randbytes(rng.choice([0, 10, 200, 3000, 30_000]))
            yield UploadCase(f"magic-{magic}-{i}", "random bytes behind a real signature", file_upload(data, f"noise.{magic}", "audio/wav"))


TRUNCATION_POINTS = (4, 12, 30, 60, 0.1, 0.3, 0.5, 0.8, 0.97)


def _truncated(rng: random.Random, real: dict[str, bytes], *_: Any) -> Iterator[UploadCase]:
    for kind, data in real.items():
        _, _, filename, content_type, _, _ = CONTAINERS[kind]
        for point in TRUNCATION_POINTS:
            keep = point if isinstance(point, int) else int(len(data) * point)
            yield UploadCase(
                f"truncated-{kind}-{point}",
                "truncated real file",
                file_upload(data[:keep], filename, content_type),
                Expect.EITHER,
                DAMAGED_WEBM if kind == "webm" else None,
                (kind,),
            )


def _bit_flipped(rng: random.Random, real: dict[str, bytes], *_: Any) -> Iterator[UploadCase]:
    for kind, data in real.items():
        _, _, filename, content_type, _, _ = CONTAINERS[kind]
        variants: list[tuple[str, bytes]] = []
        for flips in (1, 4, 16, 64, 512):
            damaged = bytearray(data)
            for _ in range(flips):
                position = rng.randrange(len(damaged))
                damaged[position] ^= 1 << rng.randrange(8)
            variants.append((f"{flips}bits", bytes(damaged)))
        header = bytearray(data)
        for _ in range(6):
            header[rng.randrange(min(64, len(header)))] ^= 1 << rng.randrange(8)
        variants.append(("header", bytes(header)))
        start = rng.randrange(len(data) // 4, len(data) // 2)
        variants.append(("zeroed-block", data[:start] + bytes(len(data) // 8) + data[start + len(data) // 8 :]))
        variants.append(("repeated-block", data[:start] + data[start // 2 : start] + data[start:]))
        variants.append(("shuffled-tail", data[:start] + bytes(rng.sample(list(data[start:]), len(data) - start))))
        variants.append(("doubled", data + data))
        tag = CODEC_TAGS.get(kind)
        if tag is not None and tag in data:
            variants.append(("codec-tag-erased", data.replace(tag, b"X" * len(tag), 1)))
            variants.append(("codec-tag-cut", data.replace(tag, tag[:-1] + b"\x00", 1)))
        for label, damaged in variants:
            yield UploadCase(
                f"flipped-{kind}-{label}",
                "bit-flipped or spliced real file",
                file_upload(damaged, filename, content_type),
                Expect.EITHER,
                DAMAGED_WEBM if kind == "webm" else None,
                (kind,),
            )


# Where each container names its codec: damaged, the stream is there but unknown.
CODEC_TAGS = {
    "webm": b"A_OPUS",
    "opus": b"OpusHead",
    "vorbis": b"\x01vorbis",
    "m4a": b"mp4a",
    "flac": b"fLaC",
    "wav": b"fmt ",
}

LIES = (
    ("notes.txt", "text/plain"),
    ("photo.png", "image/png"),
    ("", "application/json"),
    ("speech", "application/octet-stream"),
)


def _lying_labels(rng: random.Random, real: dict[str, bytes], *_: Any) -> Iterator[UploadCase]:
    for kind, data in real.items():
        for filename, content_type in LIES:
            yield UploadCase(
                f"labelled-{kind}-as-{content_type.split('/')[1]}",
                "lying file name and Content-Type (real audio)",
                file_upload(data, filename or "blob", content_type),
                Expect.ACCEPTED,
            )
    text = b"This is not audio. " * 100
    png = b"\x89PNG\r\n\x1a\n" + rng.randbytes(2000)
    not_audio = [
        ("text-as-wav", text, "speech.wav", "audio/wav"),
        ("png-as-mp3", png, "speech.mp3", "audio/mpeg"),
        ("json-as-flac", json.dumps({"audio": [0.1] * 500}).encode(), "speech.flac", "audio/flac"),
        ("html-as-m4a", b"<!doctype html><html><body>" + b"x" * 3000 + b"</body></html>", "a.m4a", "audio/mp4"),
        ("video-only-mp4", _video_only(), "speech.m4a", "audio/mp4"),
    ]
    for name, data, filename, content_type in not_audio:
        yield UploadCase(name, "not audio, labelled as audio", file_upload(data, filename, content_type))


def _video_only() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 40, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def _lying_wav_headers(rng: random.Random, real: dict[str, bytes], *_: Any) -> Iterator[UploadCase]:
    pcm = pcm16(SPOKEN_SECONDS, 44_100, 1)
    category = "lying WAV header"

    def case(name: str, data: bytes, expect: Expect = Expect.EITHER, issue: str | None = None) -> UploadCase:
        return UploadCase(f"wav-{name}", category, file_upload(data), expect, issue)

    for tag in (0x0000, 0x0002, 0x0006, 0x0011, 0x0055, 0x1234, 0x7FFF):
        yield case(f"format-tag-{tag:#06x}", wav(pcm, format_tag=tag), Expect.EITHER, UNKNOWN_WAV_FORMAT)
    for bits in (0, 1, 4, 7, 12, 20, 40, 64, 255):
        yield case(f"bits-{bits}", wav(pcm, bits=bits), Expect.EITHER, UNKNOWN_WAV_FORMAT)
    yield case("float-bits-16", wav(pcm, format_tag=WAVE_FORMAT_IEEE_FLOAT, bits=16), Expect.EITHER, UNKNOWN_WAV_FORMAT)
    yield case("extensible-bad-guid", wav(pcm, format_tag=WAVE_FORMAT_EXTENSIBLE, fmt_extra=struct.pack("<HHI", 22, 16, 4) + rng.randbytes(16)), Expect.EITHER, UNKNOWN_WAV_FORMAT)
    yield case("extensible-short", wav(pcm, format_tag=WAVE_FORMAT_EXTENSIBLE, fmt_extra=b"\x16\x00"), Expect.EITHER, UNKNOWN_WAV_FORMAT)
    yield case("zero-channels", wav(pcm, channels=0, block_align=2))
    yield case("zero-rate", wav(pcm, rate=0, byte_rate=88_200))
    yield case("zero-block-align", wav(pcm, block_align=0))
    yield case("odd-block-align", wav(pcm, block_align=3))
    yield case("lying-byte-rate", wav(pcm, byte_rate=1))
    yield case("huge-byte-rate", wav(pcm, byte_rate=0xFFFFFFFF))
    yield case("riff-size-zero", wav(pcm, riff_size=0))
    yield case("riff-size-huge", wav(pcm, riff_size=0xFFFFFFFF))
    yield case("data-size-odd", wav(pcm, data_size=len(pcm) - 1))
    yield case("data-size-zero", wav(pcm, data_size=0))
    yield case("no-fmt-chunk", b"RIFF" + struct.pack("<I", 12 + len(pcm)) + b"WAVEdata" + struct.pack("<I", len(pcm)) + pcm)
    yield case("no-data-chunk", wav(b"")[: -8])
    yield case("junk-chunk-huge", wav(pcm, chunks_before_data=b"JUNK" + struct.pack("<I", 0x7FFFFFF0)))
    yield case("two-fmt-chunks", wav(pcm, chunks_before_data=b"fmt " + struct.pack("<I", 16) + struct.pack("<HHIIHH", 1, 64, 8000, 8000, 128, 16)))
    yield case("header-only", wav(b"", data_size=0)[:44])
    floats = (np.sin(np.arange(int(44_100 * SPOKEN_SECONDS)) / 10) * 0.5).astype("<f4")
    for label, value in (("nan", np.nan), ("inf", np.inf), ("-inf", -np.inf)):
        poisoned = floats.copy()
        poisoned[::7] = value
        yield case(f"float-{label}", wav(poisoned.tobytes(), format_tag=WAVE_FORMAT_IEEE_FLOAT, bits=32), Expect.REFUSED, NON_FINITE_FLOAT)
    yield case("float-all-nan", wav(np.full(8000, np.nan, "<f4").tobytes(), format_tag=WAVE_FORMAT_IEEE_FLOAT, bits=32), Expect.REFUSED, NON_FINITE_FLOAT)
    yield case("float-huge-values", wav((floats * 1e30).tobytes(), format_tag=WAVE_FORMAT_IEEE_FLOAT, bits=32))


def _extreme_formats(rng: random.Random, real: dict[str, bytes], max_upload_bytes: int, max_audio_seconds: float) -> Iterator[UploadCase]:
    category = "extreme rate or channel count"
    # Common rates are audio; above 96 kHz a server may cap the rate (422).
    for rate in (384_000, 192_000, 96_000, 8_000, 4_000, 1_000):
        expect = Expect.EITHER if rate > 96_000 else Expect.ACCEPTED
        yield UploadCase(f"wav-rate-{rate}", category, file_upload(wav(pcm16(SPOKEN_SECONDS, rate, 1), rate=rate)), expect)
    for rate in (1, 2, 50):
        samples = max(1, int(rate * SPOKEN_SECONDS))
        yield UploadCase(f"wav-rate-{rate}", category, file_upload(wav(bytes(2 * samples), rate=rate)), Expect.EITHER)
    for rate in (0x7FFFFFFF, 0xFFFFFFFF):
        yield UploadCase(f"wav-rate-{rate}", category, file_upload(wav(pcm16(SPOKEN_SECONDS, 44_100, 1), rate=rate)), Expect.EITHER)
    # Up to 7.1 is ordinary audio; more may be refused (422) but must not hurt.
    for channels in (2, 6, 8, 16, 64):
        issue, expect = (MANY_CHANNELS, Expect.EITHER) if channels >= 8 else (None, Expect.ACCEPTED)
        yield UploadCase(f"wav-{channels}-channels", category, file_upload(wav(pcm16(SPOKEN_SECONDS, 44_100, channels), channels=channels)), expect, issue)
    for channels in (255, 65_535):
        yield UploadCase(f"wav-{channels}-channels-declared", category, file_upload(wav(pcm16(SPOKEN_SECONDS, 44_100, 1), channels=channels)), Expect.EITHER, MANY_CHANNELS)
    for channels in (2, 6, 8):
        speech = speech_like(SPOKEN_SECONDS, 44_100, bursts=[(0.0, SPOKEN_SECONDS)])
        interleaved = (np.repeat(speech[:, None], channels, axis=1) * 20_000).astype(np.int16)
        issue, expect = (MANY_CHANNELS, Expect.EITHER) if channels >= 8 else (None, Expect.ACCEPTED)
        yield UploadCase(f"flac-{channels}-channels", category, file_upload(flac(interleaved, 44_100), "speech.flac", "audio/flac"), expect, issue)
    for rate in (384_000, 655_350, 1):
        count = max(16, int(rate * SPOKEN_SECONDS))
        interleaved = (np.repeat(speech_like(count / max(rate, 100), max(rate, 100))[:count, None], 2, axis=1) * 20_000).astype(np.int16)
        yield UploadCase(f"flac-rate-{rate}", category, file_upload(flac(interleaved, rate), "speech.flac", "audio/flac"), Expect.EITHER)


def _declared_sizes(rng: random.Random, real: dict[str, bytes], max_upload_bytes: int, max_audio_seconds: float) -> Iterator[UploadCase]:
    category = "extreme declared or real size"
    pcm = pcm16(SPOKEN_SECONDS, 44_100, 1)
    for size in (0x7FFFFFFF, 0xFFFFFFF0, len(pcm) * 1000):
        yield UploadCase(f"wav-data-declares-{size}", category, file_upload(wav(pcm, data_size=size)))
    streamed = wav(pcm, data_size=0xFFFFFFFF, riff_size=0xFFFFFFFF)
    yield UploadCase("wav-streamed-sizes", category, file_upload(streamed), Expect.EITHER)
    flac_file = bytearray(real["flac"])
    # STREAMINFO (right after "fLaC" and the 4-byte block header): bytes 13..17 of the
    # block hold the 36-bit total sample count; claim 2^36 - 1 samples.
    info = 8
    flac_file[info + 13] |= 0x0F
    flac_file[info + 14 : info + 18] = b"\xff\xff\xff\xff"
    yield UploadCase("flac-declares-huge-length", category, file_upload(bytes(flac_file), "a.flac", "audio/flac"), Expect.EITHER)
    too_long = wav(pcm16(0.1, 44_100, 1) * int(max_audio_seconds * 10 + 20))
    yield UploadCase("wav-longer-than-limit", category, file_upload(too_long))
    yield UploadCase("over-upload-limit", category, file_upload(rng.randbytes(max_upload_bytes + 1)))
    yield UploadCase("empty-file", category, file_upload(b""))
    yield UploadCase("one-byte-file", category, file_upload(b"\x00"))


def _compression_bombs(rng: random.Random, real: dict[str, bytes], max_upload_bytes: int, max_audio_seconds: float) -> Iterator[UploadCase]:
    category = "compression bomb"
    for seconds, rate in ((60, 384_000), (30, 655_350), (max_audio_seconds * 4, 192_000)):
        silence = np.zeros((int(seconds * rate), 2), np.int16)
        yield UploadCase(f"flac-silence-{seconds:g}s-{rate}", category, file_upload(flac(silence, rate), "bomb.flac", "audio/flac"))
    for seconds in (300, 60):
        silence = np.zeros((1, int(seconds * 48_000)), np.float32)
        yield UploadCase(f"opus-silence-{seconds}s", category, file_upload(_encode(silence, 48_000, "ogg", "libopus", "mono", None), "bomb.opus", "audio/ogg"))
    silence = np.zeros((2, int(40 * 192_000)), np.float32)
    yield UploadCase("vorbis-silence-40s-192k", category, file_upload(_encode(silence, 192_000, "ogg", "vorbis", "stereo", ENCODER_OPTIONS["vorbis"]), "bomb.ogg", "audio/ogg"))
    silence = np.zeros((1, int(60 * 48_000)), np.float32)
    yield UploadCase("mp3-silence-60s", category, file_upload(_encode(silence, 48_000, "mp3", "libmp3lame", "mono", None), "bomb.mp3", "audio/mpeg"))


def _non_multipart(rng: random.Random, real: dict[str, bytes], *_: Any) -> Iterator[UploadCase]:
    category = "not a multipart body"
    wav_file = real["wav"]
    bodies = [
        ("json", json.dumps({FIELD: "aGVsbG8="}).encode(), "application/json"),
        ("json-array", b"[1, 2, 3]", "application/json"),
        ("urlencoded", f"{FIELD}=hello&x=1".encode(), "application/x-www-form-urlencoded"),
        ("text", b"hello", "text/plain"),
        ("raw-wav", wav_file, "audio/wav"),
        ("raw-wav-octet-stream", wav_file, "application/octet-stream"),
        ("empty-no-type", b"", None),
        ("empty-multipart-no-boundary", b"", "multipart/form-data"),
        ("multipart-no-boundary", wav_file, "multipart/form-data"),
        ("multipart-empty-boundary", wav_file, "multipart/form-data; boundary="),
        ("multipart-wrong-boundary", b"--other\r\n" + wav_file + b"\r\n--other--\r\n", "multipart/form-data; boundary=expected"),
        ("multipart-garbage", rng.randbytes(5000), "multipart/form-data; boundary=abc"),
        ("multipart-mixed", wav_file, "multipart/mixed; boundary=abc"),
        ("xml", b"<?xml version='1.0'?><audio/>", "application/xml"),
    ]
    for name, content, content_type in bodies:
        yield UploadCase(f"body-{name}", category, raw_body(content, content_type))


def _form_fields(rng: random.Random, real: dict[str, bytes], *_: Any) -> Iterator[UploadCase]:
    category = "missing, misnamed or duplicate fields"
    wav_file, mp3_file = real["wav"], real["mp3"]
    for name in ("audio", "file", "Audio_File", "audio_file ", "audio_file[]", ""):
        yield UploadCase(f"field-named-{name or 'empty'}", category, multipart([part(name, wav_file)]))
    yield UploadCase("field-text-value", category, {"data": {FIELD: "hello"}, "files": [("note", ("n.txt", b"x", "text/plain"))]})
    yield UploadCase("field-text-value-only", category, multipart([part(FIELD, b"hello", filename=None, content_type=None)]))
    yield UploadCase("field-text-holding-wav", category, multipart([part(FIELD, wav_file, filename=None, content_type=None)]))
    yield UploadCase("no-parts", category, multipart([]))
    yield UploadCase("duplicate-field-two-real-files", category, {"files": [(FIELD, ("a.wav", wav_file, "audio/wav")), (FIELD, ("b.mp3", mp3_file, "audio/mpeg"))]}, Expect.ACCEPTED)
    yield UploadCase("duplicate-field-bad-then-real", category, {"files": [(FIELD, ("a.wav", b"junk", "audio/wav")), (FIELD, ("b.wav", wav_file, "audio/wav"))]}, Expect.EITHER)
    yield UploadCase("several-files", category, {"files": [(f"extra{i}", (f"{i}.wav", wav_file, "audio/wav")) for i in range(3)] + [(FIELD, ("a.wav", wav_file, "audio/wav"))]}, Expect.ACCEPTED)
    yield UploadCase("too-many-files", category, {"files": [(f"extra{i}", (f"{i}.wav", b"x", "audio/wav")) for i in range(8)] + [(FIELD, ("a.wav", wav_file, "audio/wav"))]})
    yield UploadCase("too-many-fields", category, {"data": {f"f{i}": "v" for i in range(40)}, "files": [(FIELD, ("a.wav", wav_file, "audio/wav"))]})
    yield UploadCase("part-without-content-type", category, multipart([part(FIELD, wav_file, content_type=None)]), Expect.ACCEPTED)
    yield UploadCase("part-with-empty-filename", category, multipart([part(FIELD, wav_file, filename="")]), Expect.EITHER)
    yield UploadCase("filename-path-traversal", category, file_upload(wav_file, "../../../etc/passwd", "audio/wav"), Expect.ACCEPTED)
    yield UploadCase("filename-unicode", category, file_upload(wav_file, "speech-\u00e9\u4e2d\U0001f600.wav", "audio/wav"), Expect.ACCEPTED)
    yield UploadCase("part-header-huge", category, multipart([b"X-Padding: " + b"a" * 20_000 + b"\r\n" + part(FIELD, wav_file)]), Expect.EITHER)
    yield UploadCase("part-no-disposition", category, multipart([b"Content-Type: audio/wav\r\n\r\n" + wav_file]))
    yield UploadCase("part-unterminated", category, raw_body(b"--b\r\n" + part(FIELD, wav_file)[:200], "multipart/form-data; boundary=b"))
    yield UploadCase("part-binary-name", category, multipart([b'Content-Disposition: form-data; name="\xff\xfe"; filename="\xc3("\r\n\r\n' + wav_file]))
