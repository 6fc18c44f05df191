"""Rendering one utterance: its chunks through the engine, frame by frame into the playout."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from server.lipsync.engine import LoadedAvatar
from server.lipsync.worker import LipSyncWorker
from server.media.playout import Playout
from server.media.utterance import FrameChunk, Utterance
from server.sessions.frame_rendering import FrameRun, failure_reported

# How often, at most, a chunk waiting for its turn looks at the playback position.
WINDOW_POLL_SECONDS = 0.05


def render_utterance(
    utterance: Utterance,
    avatar: LoadedAvatar,
    worker: LipSyncWorker,
    playout: Playout,
    batch_size: int,
    owner: str,
    on_failed: Callable[[Utterance, str], None],
) -> asyncio.Task[None]:
    """The task that renders `utterance` chunk by chunk, handing each frame to the
    playout as it lands.

    Chunk k is started once chunk k-1 has started playing, so at most two chunks of
    frames are held at a time; the first chunk's first frames gate the start of speech,
    and its trip to the worker is queued now, before the task first runs. An utterance
    staged behind another renders only its first chunk until its turn. A failure is
    handed to `on_failed` with a sentence saying what went wrong (from the task: not
    from inside the caller, which is in the middle of the speech queue's step).
    """
    first = FrameRun(utterance, utterance.chunks[0].frames, avatar, worker, playout, batch_size, owner)
    try:
        first.start(utterance.samples, first.frames)
        failed = None
    except Exception as error:  # raised in the task, as a failure of the rendering
        failed = error
    task = asyncio.ensure_future(_render_chunks(first, failed, on_failed))
    task.add_done_callback(lambda _: first.cancel())  # a task cancelled before it ran
    return task


async def _render_chunks(
    first: FrameRun, failed: Exception | None, on_failed: Callable[[Utterance, str], None]
) -> None:
    utterance, playout = first.utterance, first.playout
    with failure_reported(utterance, first.owner, on_failed):
        if failed is not None:
            raise failed
        await first.finish()
        for chunk in utterance.chunks[1:]:
            await _wait_until_current(utterance, playout)
            if chunk.index >= 2:
                await _wait_until_playing(utterance, playout, utterance.chunks[chunk.index - 1])
            if not utterance.active:
                return
            run = first.following(chunk.frames)
            run.start(utterance.samples, chunk.frames)
            await run.finish()


async def _wait_until_current(utterance: Utterance, playout: Playout) -> None:
    while utterance.active and playout.utterance is not utterance:
        await asyncio.sleep(WINDOW_POLL_SECONDS)


async def _wait_until_playing(utterance: Utterance, playout: Playout, chunk: FrameChunk) -> None:
    start = chunk.frames.start / utterance.fps
    while utterance.active and playout.utterance is utterance:
        position = playout.position() if utterance.start_time is not None else 0.0
        if utterance.start_time is not None and position >= start:
            return
        remaining = start - position
        await asyncio.sleep(min(max(remaining, WINDOW_POLL_SECONDS / 5), WINDOW_POLL_SECONDS))
