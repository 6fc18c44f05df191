"""Uploaded speech in any common container, decoded to 48 kHz mono PCM."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np
import soxr
from av.audio.plane import AudioPlane

from server.refusal import Refusal

SAMPLE_RATE = 48_000
"""Every utterance is played, analysed and sent at this rate (Opus' native one)."""

# A file declaring more audio than this share decoded is called truncated rather than
# accepted silently (a cut-off upload on a flaky mobile network is the usual cause).
MIN_DECODED_SHARE = 0.9
MAX_SAMPLE_RATE = 192_000
"""Default cap on a stream's sample rate (DECODE_MAX_SAMPLE_RATE): studio audio, no more."""
MAX_CHANNELS = 32
"""Default cap on a stream's channels (DECODE_MAX_CHANNELS)."""
# Sample format (without the planar "p") -> numpy type, offset, full scale.
SAMPLE_FORMATS: dict[str, tuple[type[np.generic], float, float]] = {
    "u8": (np.uint8, 128.0, 128.0),
    "s16": (np.int16, 0.0, 2.0**15),
    "s32": (np.int32, 0.0, 2.0**31),
    "s64": (np.int64, 0.0, 2.0**63),
    "flt": (np.float32, 0.0, 1.0),
    "dbl": (np.float64, 0.0, 1.0),
}
# Leeway for containers whose declared duration is only an estimate (VBR mp3 without
# a Xing header, for instance).
DURATION_SLACK_SECONDS = 0.25
WAV_PROBE_BYTES = 4096
"""How much of a WAV file FFmpeg reads to learn its stream. Its header says it all, and
FFmpeg's default (5 MB) reads a whole upload at ~60 us per KB: 11 ms of an 8 s upload's
18 ms decode, in a pool that decodes every upload."""


class AudioInputError(Refusal, ValueError):
    """An upload that cannot become an utterance."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status)


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray
    """float32 mono at `SAMPLE_RATE`, in [-1, 1]."""
    source_format: str
    source_codec: str
    source_rate: int
    source_channels: int

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def decode_audio(
    data: bytes,
    max_seconds: float,
    max_rate: int = MAX_SAMPLE_RATE,
    max_channels: int = MAX_CHANNELS,
) -> DecodedAudio:
    """Decode an uploaded file held in memory, streaming, within the limits.

    Untrusted files are decoded in a worker process (`server.isolation`); this function is
    what runs there. Its limits are checked on the stream's header first, then on every
    decoded frame, so that a file that lies about itself stops before it allocates.

    Raises `AudioInputError` with 400 (empty, corrupt, truncated, or non-finite samples),
    413 (longer than `max_seconds`, a rate over `max_rate`, more than `max_channels`
    channels), 415 (not audio, or a format FFmpeg cannot read) or 422 (audio in a sample
    format or layout that cannot be used).
    """
    if not data:
        raise AudioInputError(400, "The uploaded audio file is empty.")
    options = {"probesize": str(WAV_PROBE_BYTES)} if _is_wav(data) else None
    try:
        container = av.open(io.BytesIO(data), mode="r", options=options)
    except (av.FFmpegError, UnicodeDecodeError, ValueError, OverflowError):
        raise AudioInputError(
            415,
            "The upload could not be read as audio. Send wav, mp3, m4a/aac, "
            "ogg/opus, flac or webm.",
        ) from None
    with container:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise AudioInputError(
                415,
                f"The upload ({container.format.name}) has no audio stream "
                f"(found: {', '.join(kinds)}).",
            )
        stream = container.streams.audio[0]
        context = stream.codec_context
        if context is None:
            raise AudioInputError(
                415, "The upload's audio is in a codec this server cannot decode."
            )
        header_rate = context.sample_rate or 0
        channels = context.channels or 0
        _check_shape(header_rate, channels, max_rate, max_channels, declared=True)
        declared = _declared_duration(container, stream)
        if _wav_data_missing(data):
            raise AudioInputError(
                400, "The WAV file is truncated: its data chunk is shorter than declared."
            )
        if declared is not None and declared > max_seconds + DURATION_SLACK_SECONDS:
            raise AudioInputError(
                413,
                f"The audio is {declared:.1f} s long; the limit is {max_seconds:g} s.",
            )
        source_rate, pieces = _decode_mono(
            container, stream, max_seconds, max_rate, max_channels
        )
        codec = context.name
        fmt = container.format.name

    source = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    del pieces
    if len(source) == 0 or not source_rate:
        raise AudioInputError(400, "The audio file contains no decodable audio samples.")
    decoded_seconds = len(source) / source_rate
    if decoded_seconds > max_seconds:
        raise AudioInputError(
            413, f"The audio is longer than the limit of {max_seconds:g} s."
        )
    if (
        declared is not None
        and decoded_seconds < declared * MIN_DECODED_SHARE - DURATION_SLACK_SECONDS
    ):
        raise AudioInputError(
            400,
            f"The audio file is truncated or corrupt: it declares {declared:.2f} s but "
            f"only {decoded_seconds:.2f} s could be decoded.",
        )
    samples = source if source_rate == SAMPLE_RATE else soxr.resample(
        source, source_rate, SAMPLE_RATE, quality="HQ"
    )
    samples = np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False)
    return DecodedAudio(samples, fmt, codec, source_rate, channels)


def _check_shape(
    rate: int, channels: int, max_rate: int, max_channels: int, declared: bool
) -> None:
    """Refuse a sample rate or channel count past the limits (0: not declared yet)."""
    said = "declares" if declared else "holds"
    if rate > max_rate:
        raise AudioInputError(
            413,
            f"The audio {said} a sample rate of {rate} Hz; at most {max_rate} Hz is "
            "accepted. Send it at 48 kHz (or any lower common rate).",
        )
    if channels > max_channels:
        raise AudioInputError(
            413,
            f"The audio {said} {channels} channels; at most {max_channels} are accepted. "
            "Send speech in mono or stereo.",
        )
    if rate < 0 or channels < 0:
        raise AudioInputError(400, "The audio stream's header is corrupt.")


def _decode_mono(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    max_seconds: float,
    max_rate: int,
    max_channels: int,
) -> tuple[int, list[np.ndarray]]:
    """The source rate and float32 mono pieces at that rate; stops once past `max_seconds`.

    Every frame is checked against the limits before it is converted, and converted here
    rather than by FFmpeg's resampler, which crashes on frames of eight or more planar
    channels (PyAV reads its plane pointers past the end of the array).
    """
    pieces: list[np.ndarray] = []
    rate = 0
    total = max_samples = 0
    try:
        for frame in container.decode(stream):
            frame_rate = frame.sample_rate
            channels = frame.layout.nb_channels
            _check_shape(frame_rate, channels, max_rate, max_channels, declared=False)
            if not frame_rate or not channels:
                raise AudioInputError(400, "The audio stream holds frames without a sample rate.")
            if not rate:
                rate = frame_rate
                max_samples = int(max_seconds * rate) + 1
            elif frame_rate != rate:
                raise AudioInputError(
                    422,
                    f"The audio changes its sample rate mid-stream ({rate} Hz, then "
                    f"{frame_rate} Hz); send it at one rate.",
                )
            total += frame.samples
            if total > max_samples:
                raise AudioInputError(
                    413, f"The audio is longer than the limit of {max_seconds:g} s."
                )
            pieces.append(frame_to_mono(frame, channels))
    except MemoryError:
        raise  # PyAV's ENOMEM is an FFmpegError too: past the worker's limit, not corrupt
    except av.FFmpegError as error:
        if not pieces:
            raise AudioInputError(
                400, f"The audio file is corrupt and could not be decoded ({error})."
            ) from None
        # Corruption after some audio: judged by the declared-duration check.
    return rate, pieces


def frame_to_mono(frame: av.AudioFrame, channels: int) -> np.ndarray:
    """A decoded frame of any packed or planar sample format as float32 mono in [-1, 1].

    Channels are averaged rather than down-mixed by FFmpeg, whose -3 dB mix can clip.
    Raises 400 for samples that are not finite (NaN or infinite floats).
    """
    name = frame.format.name
    planar = frame.format.is_planar
    kind = SAMPLE_FORMATS.get(name.removesuffix("p") if planar else name)
    if kind is None:
        raise AudioInputError(
            422, f"The audio uses the sample format {name}, which this server cannot read."
        )
    dtype, offset, scale = kind
    count = frame.samples
    if channels == 1:
        # Mono needs no mix: straight to float32, which holds every 16-bit sample (and
        # rounds a 32-bit one) as the float64 mix would; a fifth of the time per frame.
        raw = np.frombuffer(AudioPlane(frame, 0), dtype, count=count)
        if scale == 1.0:  # float samples
            if not np.isfinite(raw).all():
                raise AudioInputError(
                    400, "The audio holds samples that are not numbers (NaN or infinite)."
                )
            return np.clip(raw, -1.0, 1.0).astype(np.float32)
        mono = raw.astype(np.float32)
        if offset:
            mono -= offset
        mono *= 1.0 / scale
        return np.clip(mono, -1.0, 1.0, out=mono)
    if planar:
        # One plane per channel, built by index: PyAV's `frame.planes` walks the pointer
        # array until a NULL that is not there past 8 channels.
        mix = np.zeros(count, np.float64)
        for index in range(channels):
            mix += np.frombuffer(AudioPlane(frame, index), dtype, count=count)
        mix /= channels
    else:
        packed = np.frombuffer(AudioPlane(frame, 0), dtype, count=count * channels)
        mix = packed.reshape(count, channels).mean(axis=1, dtype=np.float64)
    if offset:
        mix -= offset
    if scale != 1.0:
        mix /= scale
    elif not np.isfinite(mix).all():
        raise AudioInputError(
            400, "The audio holds samples that are not numbers (NaN or infinite)."
        )
    return np.clip(mix, -1.0, 1.0).astype(np.float32)


def _declared_duration(
    container: av.container.InputContainer, stream: av.AudioStream
) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
        if seconds > 0:
            return seconds
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _is_wav(data: bytes) -> bool:
    return len(data) >= 12 and data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE"


def _wav_data_missing(data: bytes) -> bool:
    """Whether a RIFF/WAVE file's data chunk declares more bytes than the file holds.

    FFmpeg quietly clamps such a chunk to the bytes present, so a WAV cut off in transit
    would otherwise play as a shorter utterance.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return False
    offset = 12
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        size = int.from_bytes(data[offset + 4 : offset + 8], "little")
        body = offset + 8
        if chunk_id == b"data":
            # 0 and 0xFFFFFFFF mean "unknown" (streamed WAV): nothing to compare with.
            return size not in (0, 0xFFFFFFFF) and body + size > len(data)
        offset = body + size + (size & 1)
    return False
