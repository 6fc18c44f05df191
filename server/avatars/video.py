"""The operator's video of a person: checked against the limits, then decoded frame by frame."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import av
import numpy as np

from server.avatars.errors import VideoError
from server.settings import Settings

if TYPE_CHECKING:
    from server.isolation.pool import DecodePool

T = TypeVar("T")

# Containers often declare a duration rounded up or estimated from the bitrate; a video
# is only refused for its length when it is clearly over (or under) the limit.
DURATION_SLACK_SECONDS = 0.25
# Frame rate assumed when a stream declares none (MuseTalk's own rate).
DEFAULT_FPS = 25.0
VIDEO_CRF = 12
"""x264 quality of the videos this server writes (the demo's): visually lossless."""
DECODER_THREADS = 2
"""Decoder threads in an isolated worker: each thread's stack and arena count against its
address-space limit, and preparation is slower than decoding anyway."""


@dataclass(frozen=True)
class VideoLimits:
    min_seconds: float
    max_seconds: float
    max_frame_side: int

    @classmethod
    def from_settings(cls, settings: Settings) -> VideoLimits:
        return cls(
            settings.avatar_min_video_seconds,
            settings.avatar_max_video_seconds,
            settings.avatar_max_frame_side,
        )

    def max_frames(self, fps: float) -> int:
        """Frames a video within the limits can hold at `fps`."""
        return int((self.max_seconds + DURATION_SLACK_SECONDS) * fps) + 1


@dataclass(frozen=True)
class VideoInfo:
    container: str
    codec: str
    width: int
    height: int
    """Size of the frames once turned upright (phones record sideways and say so)."""
    fps: float
    duration: float
    """Seconds, as the container declares (or as counted when it does not)."""

    @property
    def frame_count(self) -> int:
        """Frames expected from the declared duration; the decoder has the last word."""
        return max(1, round(self.duration * self.fps))


def probe_video(path: Path, limits: VideoLimits, pool: DecodePool | None = None) -> VideoInfo:
    """What the video is, refused early when it cannot become an avatar.

    With a `pool`, the file is opened in one of its worker processes (an uploaded video).
    Raises `VideoError`: 400 unreadable, 415 no video stream, 413 too long or frames too
    large (or past the worker's limits), 422 too short.
    """
    if pool is not None:
        return _isolated(lambda: pool.call(probe_video, path, limits))
    with _open(path) as container:
        stream = _video_stream(container)
        fps = float(stream.average_rate or stream.guessed_rate or DEFAULT_FPS)
        frames = _decode(container, stream)
        first = next(frames, None)
        if first is None:
            raise VideoError(400, "The video stream holds no frame that could be decoded.")
        width, height = first.width, first.height
        if _rotation(first) in (90, 270):
            width, height = height, width
        duration = _declared_duration(container, stream)
        if duration is None:  # a raw stream, for instance: count the frames instead
            duration = (1 + sum(1 for _ in frames)) / fps
        info = VideoInfo(container.format.name, stream.codec_context.name, width, height, fps, duration)
    check_limits(info, limits)
    return info


def check_limits(info: VideoInfo, limits: VideoLimits) -> None:
    if max(info.width, info.height) > limits.max_frame_side:
        raise VideoError(
            413,
            f"The video's frames are {info.width}x{info.height}; their longest side may be at most "
            f"{limits.max_frame_side} pixels (AVATAR_MAX_FRAME_SIDE). Scale the video down first.",
        )
    if info.duration > limits.max_seconds + DURATION_SLACK_SECONDS:
        raise VideoError(
            413,
            f"The video is {info.duration:.1f} s long; at most {limits.max_seconds:g} s is accepted "
            "(AVATAR_MAX_VIDEO_SECONDS). Cut a shorter clip of the person looking at the camera.",
        )
    if info.duration < limits.min_seconds - DURATION_SLACK_SECONDS:
        raise VideoError(
            422,
            f"The video is {info.duration:.1f} s long; at least {limits.min_seconds:g} s is needed "
            "(AVATAR_MIN_VIDEO_SECONDS), or the avatar's idle loop repeats visibly.",
        )


def read_frames(
    path: Path, max_frames: int | None = None, pool: DecodePool | None = None, threads: int = 0
) -> Iterator[np.ndarray]:
    """The video's frames, upright, as [H, W, 3] uint8 RGB, in decoding order.

    With a `pool`, they are decoded in one of its worker processes and sent here one by one.
    `threads`: decoder threads (0: FFmpeg's choice, one per core).
    Raises `VideoError` 400 when the stream is damaged or holds no frame, and 413 past
    `max_frames` (a container that understated its duration) or the worker's limits.
    """
    if pool is not None:
        frames = pool.stream(read_frames, path, max_frames, None, DECODER_THREADS)
        try:
            while True:
                frame = _isolated(lambda: next(frames, None))
                if frame is None:
                    return
                yield frame
        finally:
            frames.close()
    with _open(path) as container:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"
        stream.thread_count = threads
        count = 0
        for frame in _decode(container, stream):
            count += 1
            if max_frames is not None and count > max_frames:
                raise VideoError(413, f"The video holds more frames ({count}+) than its length allows.")
            image = frame.to_ndarray(format="rgb24")
            rotation = _rotation(frame)
            yield np.ascontiguousarray(np.rot90(image, k=rotation // 90)) if rotation else image
        if count == 0:
            raise VideoError(400, "The video stream holds no frame that could be decoded.")


def _isolated(task: Callable[[], T]) -> T:
    """`task()`, with the decode pool's refusals told as `VideoError`."""
    from server.isolation.pool import DecodeError

    try:
        return task()
    except DecodeError as error:
        raise VideoError(error.status, error.message) from None


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, UnicodeDecodeError, ValueError):
        raise VideoError(
            400,
            "The file could not be read as a video (damaged, or not a video). "
            "Send mp4, mov, webm or mkv.",
        ) from None


def _video_stream(container: av.container.InputContainer) -> av.VideoStream:
    streams = [
        s for s in container.streams.video
        if not s.disposition & av.stream.Disposition.attached_pic  # cover art of an audio file
    ]
    if not streams:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        raise VideoError(
            415,
            f"The file ({container.format.name}) has no video stream (found: {', '.join(kinds)}); "
            "send a video of the person.",
        )
    return streams[0]


def _decode(container: av.container.InputContainer, stream: av.VideoStream) -> Iterator[av.VideoFrame]:
    count = 0
    try:
        for frame in container.decode(stream):
            count += 1
            yield frame
    except MemoryError:
        raise  # PyAV's ENOMEM is an FFmpegError too: past a worker's limit, not damage
    except av.FFmpegError as error:
        raise VideoError(
            400, f"The video is damaged: decoding failed after {count} frames ({error})."
        ) from None


def _declared_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    if stream.frames:
        return stream.frames / float(stream.average_rate or DEFAULT_FPS)
    return None


def _rotation(frame: av.VideoFrame) -> int:
    """Degrees (0, 90, 180, 270) to turn the frame counter-clockwise to show it upright."""
    return round(getattr(frame, "rotation", 0) / 90) % 4 * 90


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float, quality: int = VIDEO_CRF) -> None:
    """Encode RGB frames (even width and height) as H.264 in `path` (.mp4, .mkv...)."""
    with av.open(str(path), mode="w") as container:
        stream = None
        for image in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.height, stream.width = image.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(quality)}
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
