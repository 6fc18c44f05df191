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
import logging
import math
from collections.abc import Callable

import numpy as np

from server.lipsync.engine import LoadedAvatar, RenderRequest
from server.lipsync.worker import LipSyncWorker
from server.media.clock import AUDIO_SAMPLE_RATE
from server.media.playout import Playout
from server.media.utterance import Utterance, UtteranceState
from server.sessions.speech import WINDOW_POLL_SECONDS

logger = logging.getLogger(__name__)


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
    clock = playout.clock
    fps = utterance.fps
    ahead_frames = max(1, round(utterance.chunk_duration * fps))
    futures: list[asyncio.Future] = []
    j = 0
    try:
        while utterance.active:
            limit = utterance.available_frames
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
            first_due = clock.wall(playout.frame_due(utterance, frames.start))
            features = await worker.call(
                engine.audio_features, window, fps, shifted, deadline=first_due
            )
            requests = []
            deadlines = []
            for k, frame_features in zip(frames, features, strict=True):
                counter = utterance.start_counter + k
                requests.append(RenderRequest(avatar, playout.avatar_index(counter), frame_features))
                group_start = k - (k - frames.start) % batch_size
                deadlines.append(clock.wall(playout.frame_due(utterance, group_start)))
            futures = worker.render(requests, deadlines, owner=owner)
            for k, future in zip(frames, futures):
                image = await future
                utterance.add_frame(k, image)
                playout.frames_added(utterance)
            futures = []
            j = frames.stop
        # The end may have come with every frame already rendered but not yet started.
        playout.frames_added(utterance)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        logger.exception(
            "rendering streamed utterance %s failed", utterance.id, extra={"session_id": owner}
        )
        utterance.error = f"rendering failed: {error}"
        on_failed(utterance, utterance.error)
    finally:
        for future in futures:
            future.cancel()


def _may_render(utterance: Utterance, playout: Playout, j: int, ahead_frames: int) -> bool:
    """Frame `j` is at most `ahead_frames` past what plays (the first ones before its turn)."""
    if playout.utterance is not utterance:
        return j < ahead_frames
    if utterance.state is not UtteranceState.PLAYING:
        return j < ahead_frames
    played = math.floor(playout.position() * utterance.fps)
    return j < played + 2 * ahead_frames
