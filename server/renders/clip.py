"""Rendering one piece of speech into an MP4 through the shared render worker."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from server.lipsync.engine import LoadedAvatar, RenderRequest
from server.lipsync.worker import LipSyncWorker
from server.media.audio_input import SAMPLE_RATE
from server.renders.mp4 import Mp4Writer

CHUNK_SECONDS = 2.0
"""Frames rendered, then encoded, together; a render holds at most one chunk of images."""
OFFLINE_DEADLINE_SECONDS = 3600.0
"""The deadline of a render's worker jobs, from when they are queued. A live session's
frames are due within seconds (a chunk and its prebuffer), so the worker, earliest
deadline first, takes every live frame before a render's; a render still advances when
no live frame waits, and is not starved for longer than this."""


def frame_count(samples: np.ndarray, fps: int) -> int:
    """Video frames of speech `samples` at `fps`: as many as a live utterance has."""
    return max(1, math.ceil(len(samples) / SAMPLE_RATE * fps - 1e-9))


async def render_clip(
    samples: np.ndarray,
    avatar: LoadedAvatar,
    worker: LipSyncWorker,
    fps: int,
    path: Path,
    owner: str,
    on_progress: Callable[[float], None],
) -> None:
    """Write `samples` (float32 mono, 48 kHz) spoken by `avatar` to the MP4 `path`.

    Frame j shows [j / fps, (j + 1) / fps) and animates the avatar's ping-pong cycle from
    its frame 0, as a live utterance starting from the idle loop's first frame would.
    `on_progress` gets the share of frames rendered and encoded, up to 1. On failure or
    cancellation the file is left unfinished; the caller removes it.
    """
    engine = worker.engine
    cycle = avatar.avatar.cycle
    total = frame_count(samples, fps)
    step = max(1, round(CHUNK_SECONDS * fps))
    writer = await asyncio.to_thread(Mp4Writer, path, fps, avatar.avatar.size)
    futures: list[asyncio.Future[np.ndarray]] = []
    try:
        for start in range(0, total, step):
            frames = range(start, min(start + step, total))
            deadline = time.monotonic() + OFFLINE_DEADLINE_SECONDS
            features = await worker.call(
                engine.audio_features, samples, float(fps), frames, deadline=deadline
            )
            requests = [
                RenderRequest(avatar, cycle[j % len(cycle)], frame_features)
                for j, frame_features in zip(frames, features, strict=True)
            ]
            futures = worker.render(requests, [deadline] * len(requests), owner=owner)
            images = [await future for future in futures]
            audio = samples[_sample(frames.start, fps) : _sample(frames.stop, fps)]
            await asyncio.to_thread(_write, writer, images, audio)
            on_progress(frames.stop / total)
        await asyncio.to_thread(writer.close)
    except BaseException:
        for future in futures:
            future.cancel()
        await asyncio.to_thread(writer.abort)
        raise


def _sample(frame: int, fps: int) -> int:
    return frame * SAMPLE_RATE // fps


def _write(writer: Mp4Writer, images: list[np.ndarray], audio: np.ndarray) -> None:
    writer.add_video(images)
    writer.add_audio(audio)
