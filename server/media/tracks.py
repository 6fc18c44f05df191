"""The session's aiortc tracks: audio and video paced by the one session clock."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame

from server.media.clock import (
    AUDIO_SAMPLE_RATE,
    AUDIO_SAMPLES_PER_FRAME,
    AUDIO_TIME_BASE,
    TIME_EPSILON,
    VIDEO_CLOCK_RATE,
    VIDEO_TIME_BASE,
    SessionClock,
    audio_frame_at_or_after,
    audio_frame_time,
)
from server.media.playout import Playout

# aiortc encodes and sends a frame after recv() returns and before it calls recv() again;
# releasing frames that much early makes them leave at their media time, which is what
# the receiver's RTCP-based sync sees. Smoothed, and capped so a stall cannot push it far.
SEND_LATENCY_SMOOTHING = 0.1
MAX_SEND_ADVANCE = 0.04

_SILENCE = np.zeros((1, AUDIO_SAMPLES_PER_FRAME), np.int16)


class _PacedTrack(MediaStreamTrack):
    """A track that releases each frame at its media time, early by the send latency."""

    def __init__(self, clock: SessionClock, monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.clock = clock
        self._monotonic = monotonic
        self._returned_at: float | None = None
        self.send_latency = 0.0
        self.frames_sent = 0

    async def _release_at(self, media_time: float) -> None:
        if self.readyState != "live":
            raise MediaStreamError
        now = self._monotonic()
        if self._returned_at is not None:
            latency = min(now - self._returned_at, MAX_SEND_ADVANCE)
            self.send_latency += SEND_LATENCY_SMOOTHING * (latency - self.send_latency)
        await self.clock.sleep_until(media_time - self.send_latency)
        if self.readyState != "live":
            raise MediaStreamError

    def _returned(self) -> None:
        self._returned_at = self._monotonic()
        self.frames_sent += 1


class AvatarAudioTrack(_PacedTrack):
    """48 kHz mono, exactly 960 samples per frame, contiguous timestamps.

    Silence while idle, the utterance while speaking; the playout decides which.
    """

    kind = "audio"

    def __init__(self, playout: Playout, clock: SessionClock) -> None:
        super().__init__(clock)
        self.playout = playout
        self._next: int | None = None

    async def recv(self) -> AudioFrame:
        if self._next is None:
            self._next = audio_frame_at_or_after(self.clock.now())
        n = self._next
        self._next += 1
        await self._release_at(audio_frame_time(n))
        samples = self.playout.audio_frame(n)
        if samples is None:
            pcm = _SILENCE
        else:
            pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)[None, :]
        frame = AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = AUDIO_SAMPLE_RATE
        frame.pts = n * AUDIO_SAMPLES_PER_FRAME
        frame.time_base = AUDIO_TIME_BASE
        self._returned()
        return frame


class AvatarVideoTrack(_PacedTrack):
    """Video at `playback_fps`: the idle loop, or the rendered frame for the audio's time."""

    kind = "video"

    def __init__(
        self,
        playout: Playout,
        clock: SessionClock,
        avatar_frames: np.ndarray,
        playback_fps: float,
        output_height: int | None = None,
    ) -> None:
        super().__init__(clock)
        self.playout = playout
        self.avatar_frames = avatar_frames
        self.playback_fps = playback_fps
        self.output_size = _scaled_size(avatar_frames.shape, output_height)
        """(width, height) frames are scaled to; None: the avatar's own size."""
        self.frames_skipped = 0
        self._next: int | None = None

    async def recv(self) -> VideoFrame:
        now_index = math.floor(self.clock.now() * self.playback_fps + TIME_EPSILON)
        if self._next is None:
            self._next = now_index + 1
        elif now_index > self._next:
            # Sending fell behind by more than a frame: skip to now rather than lag.
            self.frames_skipped += now_index - self._next
            self._next = now_index
        k = self._next
        self._next += 1
        t = k / self.playback_fps
        await self._release_at(t)
        # A frame is on screen for 1 / playback_fps: show what belongs to the middle of
        # that time, so the picture is never more than half a frame early or late.
        pick = self.playout.video_frame(t + 0.5 / self.playback_fps)
        image = pick.image if pick.image is not None else self.avatar_frames[pick.avatar_index]
        frame = VideoFrame.from_ndarray(image, format="rgb24")
        if self.output_size is not None:
            frame = frame.reformat(width=self.output_size[0], height=self.output_size[1])
        frame.pts = round(t * VIDEO_CLOCK_RATE)
        frame.time_base = VIDEO_TIME_BASE
        self._returned()
        return frame


def _scaled_size(shape: tuple[int, ...], height: int | None) -> tuple[int, int] | None:
    """Frames of `shape` (frames, h, w, 3) scaled to `height`, the width kept in proportion
    (both even, as encoders want); None when there is nothing to scale."""
    if height is None or height == shape[1]:
        return None
    width = max(2, round(shape[2] * height / shape[1] / 2) * 2)
    return width, max(2, height // 2 * 2)
