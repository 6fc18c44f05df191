"""A run of an utterance's frames through the render worker, into the playout.

Shared by whole utterances (server/sessions/speech.py, chunk by chunk) and growing ones
(server/sessions/streamed_speech.py, as their audio arrives).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

import numpy as np

from server.lipsync.engine import LoadedAvatar, RenderRequest
from server.lipsync.worker import LipSyncWorker
from server.media.playout import Playout
from server.media.utterance import Utterance

logger = logging.getLogger(__name__)


async def render_frames(
    utterance: Utterance,
    frames: range,
    samples: np.ndarray,
    feature_frames: range,
    avatar: LoadedAvatar,
    worker: LipSyncWorker,
    playout: Playout,
    batch_size: int,
    owner: str,
) -> None:
    """Render `frames` of `utterance`, handing each to the playout as it lands.

    The engine's features come from `samples`, in which those frames are
    `feature_frames` (the whole audio, or a window of it). Jobs carry the time their
    frames will be shown as deadline, and a session's `batch_size` consecutive frames
    share one so the worker keeps them together. Cancelled, it cancels its jobs.
    """
    clock = playout.clock
    first_wanted = clock.wall(playout.frame_wanted(utterance, frames.start))
    features = await worker.call(
        worker.engine.audio_features, samples, utterance.fps, feature_frames, deadline=first_wanted
    )
    requests = []
    deadlines = []
    wanted = []
    for j, frame_features in zip(frames, features, strict=True):
        counter = utterance.start_counter + j
        requests.append(RenderRequest(avatar, playout.avatar_index(counter), frame_features))
        group_start = j - (j - frames.start) % batch_size
        if group_start == j:  # the group's times, once for its frames
            due = playout.frame_due(utterance, group_start)
            group_times = clock.wall(due), clock.wall(playout.frame_wanted(utterance, group_start, due))
        deadlines.append(group_times[0])
        wanted.append(group_times[1])
    futures: list[asyncio.Future] = worker.render(requests, deadlines, owner=owner, wanted=wanted)
    try:
        for j, future in zip(frames, futures):
            image = await future
            utterance.add_frame(j, image)
            playout.frames_added(utterance)
    finally:
        for future in futures:
            future.cancel()


@contextlib.contextmanager
def failure_reported(
    utterance: Utterance, owner: str, on_failed: Callable[[Utterance, str], None]
) -> Iterator[None]:
    """Hand a rendering failure to `on_failed` with a sentence saying what went wrong
    (and log it), instead of raising it; cancellation passes through."""
    try:
        yield
    except Exception as error:
        logger.exception("rendering utterance %s failed", utterance.id, extra={"session_id": owner})
        utterance.error = f"rendering failed: {error}"
        on_failed(utterance, utterance.error)
