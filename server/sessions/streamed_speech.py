"""Rendering a growing utterance: frames as their audio (and look-ahead) arrives.

Streamed speech has no chunks known in advance: frames are rendered in runs of what
`Utterance.available_frames` allows, each as soon as its audio has arrived, and never more
than `chunk_duration` ahead of what plays (a client sending faster than real time fills
the audio buffer, not the frame memory). The engine gets a sliding window of the audio:
from `audio_context_seconds` before the run (rounded down to a whole second, so that
frame and feature indices stay aligned) to what has arrived.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import numpy as np

from server.lipsync.engine import LoadedAvatar
from server.lipsync.worker import LipSyncWorker
from server.media.clock import AUDIO_SAMPLE_RATE
from server.media.playout import Playout
from server.media.utterance import Utterance, UtteranceState
from server.sessions.frame_rendering import failure_reported, render_frames
from server.sessions.speech import WINDOW_POLL_SECONDS


class AudioArrival:
    """Wakes a renderer when a growing utterance gets audio or ends."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass
        self._event.clear()


def audio_window(
    samples: np.ndarray, fps: int, frames: range, context_seconds: float
) -> tuple[np.ndarray, range]:
    """The audio an engine gets for `frames` of a growing utterance, and those frames'
    indices in it: from `context_seconds` before the first frame, rounded down to a whole
    second (there frame and feature grids line up), to what has arrived."""
    context_frames = math.ceil(context_seconds * fps)
    first_second = max(0, frames.start - context_frames) // fps
    offset_frames = first_second * fps
    window = samples[first_second * AUDIO_SAMPLE_RATE :].copy()
    return window, range(frames.start - offset_frames, frames.stop - offset_frames)


RENDER_ALLOWANCE_SECONDS = 0.005
"""Time from a streamed frame's audio arriving to the frame being rendered (the demo
engine: 1-2 ms; MuseTalk on a GPU batches such frames with others' and takes longer,
which shows as `video_frames_late`)."""


def stream_start_margin(fps: float, playback_fps: float) -> float:
    """The lead a streamed utterance needs at its start beyond its first frame's audio (or,
    short of it, waits for), so that frames whose audio arrives at real time are never late.

    The video sends its first frame of speech at the start (tracks.py moves its frame grid
    there) and each later one at start + n / playback_fps, showing the rendered frame for
    the middle of that tick: frame j is first shown at the first tick n whose middle is in
    it, and must be rendered by then, while its audio (to (j + 1) / fps) comes in at real
    time. The margin is the most any frame is wanted before that (half a playback frame at
    10 / 15: frames 1, 3, ... are wanted 33 ms early; nothing at 25 / 25), plus
    `RENDER_ALLOWANCE_SECONDS` to render a frame once its audio is in. Rendering the first
    frame counts towards the wait.
    """
    margin = 0.0
    period = max(1, round(fps))  # the ticks' pattern over the frames repeats within a second
    for j in range(1, period + 1):
        n = math.ceil(j * playback_fps / fps - 0.5 - 1e-9)
        margin = max(margin, j / fps - n / playback_fps)
    return margin + RENDER_ALLOWANCE_SECONDS


def lookahead_frames(seconds: float, fps: float) -> int:
    """Whole frames at `fps` that cover `seconds` of look-ahead."""
    return max(0, math.ceil(seconds * fps - 1e-9))


async def render_growing_utterance(
    utterance: Utterance,
    arrival: AudioArrival,
    avatar: LoadedAvatar,
    worker: LipSyncWorker,
    playout: Playout,
    batch_size: int,
    owner: str,
    on_failed: Callable[[Utterance, str], None],
) -> None:
    """Render `utterance` while its audio arrives, handing frames to the playout."""
    engine = worker.engine
    fps = utterance.fps
    ahead_frames = max(1, round(utterance.chunk_duration * fps))
    j = 0
    with failure_reported(utterance, owner, on_failed):
        while utterance.active:
            limit = utterance.available_frames
            if limit >= playout.prebuffer_frames(utterance) or utterance.complete:
                playout.input_ready(utterance)
            if j >= limit:
                if utterance.complete:
                    break
                await arrival.wait(WINDOW_POLL_SECONDS)
                continue
            if not _may_render(utterance, playout, j, ahead_frames):
                await arrival.wait(WINDOW_POLL_SECONDS)
                continue
            frames = range(j, min(limit, j + ahead_frames))
            window, shifted = audio_window(
                utterance.samples, round(fps), frames, engine.audio_context_seconds
            )
            await render_frames(
                utterance, frames, window, shifted, avatar, worker, playout, batch_size, owner
            )
            j = frames.stop
        # The end may have come with every frame already rendered but not yet started.
        playout.frames_added(utterance)


def _may_render(utterance: Utterance, playout: Playout, j: int, ahead_frames: int) -> bool:
    """Frame `j` is at most `ahead_frames` past what plays (the first ones before its turn)."""
    if playout.utterance is not utterance:
        return j < ahead_frames
    if utterance.state is not UtteranceState.PLAYING:
        return j < ahead_frames
    played = math.floor(playout.position() * utterance.fps)
    return j < played + 2 * ahead_frames
