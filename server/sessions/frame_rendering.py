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
    share one so the worker keeps them together; none is started more than the worker's
    `render_ahead` before it is wanted. The leading frames wanted already (those a start
    of speech waits for) are rendered with the features, in the same turn of the worker.
    Cancelled, it cancels its jobs.
    """
    clock = playout.clock
    indices = []
    deadlines = []
    wanted = []
    for j in frames:
        indices.append(playout.avatar_index(utterance.start_counter + j))
        group_start = j - (j - frames.start) % batch_size
        if group_start == j:  # the group's times, once for its frames
            due = playout.frame_due(utterance, group_start)
            group_times = clock.wall(due), clock.wall(playout.frame_wanted(utterance, group_start, due))
        deadlines.append(group_times[0])
        wanted.append(group_times[1])
    now = clock.wall(clock.now())
    head = next((i for i, t in enumerate(wanted) if t > now), len(wanted))
    head = min(head, worker.max_batch)
    features, first_images = await worker.features_and_first_frames(
        samples, utterance.fps, feature_frames,
        [(avatar, i, d) for i, d in zip(indices[:head], deadlines[:head])],
        wanted[0] if wanted else now, owner,
    )
    if len(features) != len(frames):
        raise RuntimeError(
            f"engine {worker.engine.name} gave {len(features)} features for {len(frames)} frames"
        )
    for j, image in zip(frames, first_images):
        utterance.add_frame(j, image)
        playout.frames_added(utterance)
    ahead = worker.render_ahead
    futures: list[asyncio.Future] = worker.render(
        [RenderRequest(avatar, i, f) for i, f in zip(indices[head:], features[head:])],
        deadlines[head:],
        owner=owner,
        wanted=wanted[head:],
        not_before=None if ahead is None else [t - ahead for t in wanted[head:]],
    )
    try:
        for j, future in zip(frames[head:], futures):
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
