"""Rendering one utterance: its chunks through the engine, frame by frame into the playout."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from server.lipsync.engine import LoadedAvatar, RenderRequest
from server.lipsync.worker import LipSyncWorker
from server.media.playout import Playout
from server.media.utterance import FrameChunk, Utterance

logger = logging.getLogger(__name__)

# How often, at most, a chunk waiting for its turn looks at the playback position.
WINDOW_POLL_SECONDS = 0.05


async def render_utterance(
    utterance: Utterance,
    avatar: LoadedAvatar,
    worker: LipSyncWorker,
    playout: Playout,
    batch_size: int,
    owner: str,
    on_failed: Callable[[Utterance, str], None],
) -> None:
    """Render `utterance` chunk by chunk, handing each frame to the playout as it lands.

    Chunk k is started once chunk k-1 has started playing, so at most two chunks of
    frames are held at a time; the first chunk's first frames gate the start of speech.
    An utterance staged behind another renders only its first chunk until its turn.
    Jobs carry the time their frames will be shown as deadline, and a session's
    `batch_size` consecutive frames share one so the worker keeps them together.
    A failure is handed to `on_failed` with a sentence saying what went wrong.
    """
    engine = worker.engine
    clock = playout.clock
    futures: list[asyncio.Future] = []
    try:
        for chunk in utterance.chunks:
            if chunk.index >= 1:
                await _wait_until_current(utterance, playout)
            if chunk.index >= 2:
                await _wait_until_playing(utterance, playout, utterance.chunks[chunk.index - 1])
            if not utterance.active:
                return
            first_due = clock.wall(playout.frame_due(utterance, chunk.frames.start))
            features = await worker.call(
                engine.audio_features, utterance.samples, utterance.fps, chunk.frames,
                deadline=first_due,
            )
            requests = []
            deadlines = []
            for j, frame_features in zip(chunk.frames, features, strict=True):
                counter = utterance.start_counter + j
                requests.append(RenderRequest(avatar, playout.avatar_index(counter), frame_features))
                group_start = j - (j - chunk.frames.start) % batch_size
                deadlines.append(clock.wall(playout.frame_due(utterance, group_start)))
            futures = worker.render(requests, deadlines, owner=owner)
            for j, future in zip(chunk.frames, futures):
                image = await future
                utterance.add_frame(j, image)
                playout.frames_added(utterance)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        logger.exception(
            "rendering utterance %s failed", utterance.id, extra={"session_id": owner}
        )
        utterance.error = f"rendering failed: {error}"
        on_failed(utterance, utterance.error)
    finally:
        for future in futures:
            future.cancel()


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
