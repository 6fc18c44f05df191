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
    run = FrameRun(utterance, frames, avatar, worker, playout, batch_size, owner)
    run.start(samples, feature_frames)
    await run.finish()


class FrameRun:
    """`render_frames` in two steps: `start` queues the features and first frames on the
    worker at once (called where a task is created, it saves the turn of the loop before
    the task first runs: tens of ms of a start of speech on a busy host); `finish`, in the
    task, waits for them, queues the rest and hands each frame to the playout."""

    def __init__(
        self,
        utterance: Utterance,
        frames: range,
        avatar: LoadedAvatar,
        worker: LipSyncWorker,
        playout: Playout,
        batch_size: int,
        owner: str,
    ) -> None:
        self.utterance = utterance
        self.frames = frames
        self.avatar = avatar
        self.worker = worker
        self.playout = playout
        self.batch_size = batch_size
        self.owner = owner
        self._first: asyncio.Future[tuple[list, list[np.ndarray]]] | None = None
        self._indices: list[int] = []
        self._deadlines: list[float] = []
        self._wanted: list[float] = []
        self._head = 0

    def following(self, frames: range) -> FrameRun:
        """A run of other `frames` of the same utterance, for the same session."""
        return FrameRun(
            self.utterance, frames, self.avatar, self.worker, self.playout, self.batch_size, self.owner
        )

    def start(self, samples: np.ndarray, feature_frames: range) -> None:
        utterance, playout, clock = self.utterance, self.playout, self.playout.clock
        frames = self.frames
        for j in frames:
            self._indices.append(playout.avatar_index(utterance.start_counter + j))
            group_start = j - (j - frames.start) % self.batch_size
            if group_start == j:  # the group's times, once for its frames
                due = playout.frame_due(utterance, group_start)
                group_times = clock.wall(due), clock.wall(playout.frame_wanted(utterance, group_start, due))
            self._deadlines.append(group_times[0])
            self._wanted.append(group_times[1])
        now = clock.wall(clock.now())
        head = next((i for i, t in enumerate(self._wanted) if t > now), len(self._wanted))
        self._head = head = min(head, self.worker.max_batch)
        self._first = self.worker.queue_features_and_first_frames(
            samples, utterance.fps, feature_frames,
            [(self.avatar, i, d) for i, d in zip(self._indices[:head], self._deadlines[:head])],
            self._wanted[0] if self._wanted else now, self.owner,
        )

    def cancel(self) -> None:
        """Drop the queued features and first frames (once the run's task has ended)."""
        if self._first is not None:
            self._first.cancel()

    async def finish(self) -> None:
        assert self._first is not None, "FrameRun.finish before start"
        utterance, playout, worker, frames, head = (
            self.utterance, self.playout, self.worker, self.frames, self._head,
        )
        features, first_images = await self._first
        if len(features) != len(frames):
            raise RuntimeError(
                f"engine {worker.engine.name} gave {len(features)} features for {len(frames)} frames"
            )
        for j, image in zip(frames, first_images):
            utterance.add_frame(j, image)
            playout.frames_added(utterance)
        ahead = worker.render_ahead
        wanted = self._wanted[head:]
        futures: list[asyncio.Future] = worker.render(
            [RenderRequest(self.avatar, i, f) for i, f in zip(self._indices[head:], features[head:])],
            self._deadlines[head:],
            owner=self.owner,
            wanted=wanted,
            not_before=None if ahead is None else [t - ahead for t in wanted],
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
