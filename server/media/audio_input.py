"""Uploaded speech in any common container, decoded to 48 kHz mono PCM."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np
import soxr

from server.refusal import Refusal

SAMPLE_RATE = 48_000
"""Every utterance is played, analysed and sent at this rate (Opus' native one)."""

# A file declaring more audio than this share decoded is called truncated rather than
# accepted silently (a cut-off upload on a flaky mobile network is the usual cause).
MIN_DECODED_SHARE = 0.9
# Leeway for containers whose declared duration is only an estimate (VBR mp3 without
# a Xing header, for instance).
DURATION_SLACK_SECONDS = 0.25


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


def decode_audio(data: bytes, max_seconds: float) -> DecodedAudio:
    """Decode an uploaded file held in memory.

    Raises `AudioInputError` with 400 (empty, corrupt or truncated), 413 (longer than
    `max_seconds`) or 415 (not audio, or a format FFmpeg cannot read).
    """
    if not data:
        raise AudioInputError(400, "The uploaded audio file is empty.")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, UnicodeDecodeError, ValueError):
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
        source_rate = stream.rate or stream.codec_context.sample_rate
        if not source_rate:
            raise AudioInputError(400, "The audio stream declares no sample rate.")
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
        pieces = _decode_mono(container, stream, int(max_seconds * source_rate) + 1)
        channels = stream.codec_context.channels
        codec = stream.codec_context.name
        fmt = container.format.name

    source = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    decoded_seconds = len(source) / source_rate
    if len(source) == 0:
        raise AudioInputError(400, "The audio file contains no decodable audio samples.")
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


def _decode_mono(
    container: av.container.InputContainer, stream: av.AudioStream, max_samples: int
) -> list[np.ndarray]:
    """float32 mono pieces at the stream's own rate; stops once past `max_samples`."""
    # Sample-format conversion only (the rate change is soxr's job). Channels are
    # averaged here rather than by FFmpeg, whose -3 dB down-mix can clip.
    to_planar = av.AudioResampler(format="fltp", rate=stream.rate)
    pieces: list[np.ndarray] = []
    total = 0
    try:
        for frame in container.decode(stream):
            frame.pts = None  # the resampler must not try to fill timestamp gaps
            for converted in to_planar.resample(frame):
                piece = converted.to_ndarray().mean(axis=0, dtype=np.float32)
                pieces.append(piece)
                total += len(piece)
            if total > max_samples:
                return pieces
        for converted in to_planar.resample(None):
            pieces.append(converted.to_ndarray().mean(axis=0, dtype=np.float32))
    except av.FFmpegError as error:
        if not pieces:
            raise AudioInputError(
                400, f"The audio file is corrupt and could not be decoded ({error})."
            ) from None
        # Corruption after some audio: judged by the declared-duration check.
    return pieces


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
