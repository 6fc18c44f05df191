"""Render jobs: queued, run a few at a time, kept with their file for a while, deleted."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from server.avatars.errors import AvatarNotFoundError
from server.avatars.store import AvatarStore
from server.lipsync.worker import LipSyncWorker
from server.media.audio_input import SAMPLE_RATE
from server.node_ids import NODE_ID_PATTERN, node_scoped
from server.refusal import Refusal
from server.renders.clip import frame_count, render_clip
from server.sessions.admission import AdmissionControl
from server.settings import SettingsError

logger = logging.getLogger(__name__)

ID_BYTES = 8
FILE_PATTERN = re.compile(rf"^({NODE_ID_PATTERN}\.)?r[0-9a-f]{{16}}\.mp4(\.part)?$")
"""The names of the files renders write; only these are removed from RENDERS_DIR."""
MIN_SWEEP_SECONDS = 1.0
MAX_SWEEP_SECONDS = 60.0
RETRY_AFTER_SECONDS = 5.0


class RenderState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class RenderNotFoundError(Refusal, LookupError):
    status = 404

    def __init__(self, render_id: str) -> None:
        super().__init__(f"Unknown render {render_id!r}: it was deleted, expired, or never existed.")


class RenderNotReadyError(Refusal):
    status = 409


class TooManyRendersError(Refusal):
    status = 429


SpeechSource = Callable[[], Awaitable[np.ndarray]]
"""What a job speaks: float32 mono 48 kHz samples, made when the job runs (a TTS), or
already decoded."""


@dataclass
class RenderJob:
    id: str
    avatar_id: str
    fps: int
    source: str
    """`audio` (an upload) or `text`."""
    path: Path
    created_at: float = field(default_factory=time.time)
    state: RenderState = RenderState.QUEUED
    progress: float = 0.0
    error: str | None = None
    duration_seconds: float | None = None
    frame_count: int | None = None
    finished_at: float | None = None
    """time.monotonic() when it ended (done or failed); the TTL counts from it."""
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.state in (RenderState.DONE, RenderState.FAILED)


class RenderJobs:
    """The server's renders: at most `max_jobs` kept, `max_running` rendering at once, a
    finished one removed with its file `ttl_seconds` after it ended."""

    def __init__(
        self,
        directory: Path,
        worker: LipSyncWorker,
        avatars: AvatarStore,
        max_jobs: int,
        max_running: int,
        ttl_seconds: float,
        max_audio_seconds: float,
        node_id: str = "",
        admission: AdmissionControl | None = None,
    ) -> None:
        self.directory = directory
        self._admission = admission
        self._worker = worker
        self._avatars = avatars
        self._max_jobs = max_jobs
        self._running = asyncio.Semaphore(max_running)
        self._ttl = ttl_seconds
        self._max_audio_seconds = max_audio_seconds
        self._node_id = node_id
        self._jobs: dict[str, RenderJob] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Create the folder, remove the files a previous run left, start expiring."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for path in self.directory.iterdir():
                if FILE_PATTERN.match(path.name):
                    path.unlink(missing_ok=True)
                    logger.info("removed %s, a render left by a previous run", path)
        except OSError as error:
            raise SettingsError(f"RENDERS_DIR={self.directory} cannot be used ({error})") from None
        self._sweeper = asyncio.create_task(self._sweep(), name="renders-expiry")

    def __len__(self) -> int:
        return len(self._jobs)

    def check_avatar(self, avatar_id: str) -> None:
        """404 for an avatar that does not exist."""
        if not self._avatars.exists(avatar_id):
            raise AvatarNotFoundError(avatar_id, self._avatars.available())

    def submit(self, avatar_id: str, fps: int, source: str, speech: SpeechSource) -> RenderJob:
        """Queue a render of `speech` by `avatar_id`; 404 for an unknown avatar, 429 when
        `max_jobs` are kept and none of them is finished, 503 when its frames do not fit
        the server's capacity now."""
        self.check_avatar(avatar_id)
        if self._admission is not None:
            self._admission.check_render(fps)
        self._make_room()
        render_id = node_scoped(self._node_id, "r" + secrets.token_hex(ID_BYTES))
        job = RenderJob(render_id, avatar_id, fps, source, self.directory / f"{render_id}.mp4")
        self._jobs[render_id] = job
        job.task = asyncio.create_task(self._run(job, speech), name=f"render-{render_id}")
        return job

    def get(self, render_id: str) -> RenderJob:
        job = self._jobs.get(render_id)
        if job is None:
            raise RenderNotFoundError(render_id)
        return job

    def video(self, render_id: str) -> Path:
        """The finished file; 409 while it is queued or running, or when it failed."""
        job = self.get(render_id)
        if job.state is RenderState.DONE:
            return job.path
        if job.state is RenderState.FAILED:
            raise RenderNotReadyError(f"Render {render_id} failed: {job.error}")
        raise RenderNotReadyError(
            f"Render {render_id} is {job.state.value} ({job.progress:.0%}); GET /renders/"
            f"{render_id} until its state is done.",
            retry_after_seconds=RETRY_AFTER_SECONDS,
        )

    async def delete(self, render_id: str) -> None:
        """Stop it if it runs, and remove it and its file."""
        job = self.get(render_id)
        del self._jobs[render_id]
        await self._stop(job)
        _remove(job.path)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for job in list(self._jobs.values()):  # jobs do not outlive the server: nor their files
            await self._stop(job)
            _remove(job.path)
        self._jobs.clear()

    def _make_room(self) -> None:
        if len(self._jobs) < self._max_jobs:
            return
        finished = [job for job in self._jobs.values() if job.finished]
        if not finished:
            raise TooManyRendersError(
                f"{len(self._jobs)} renders are queued or running, the limit "
                "(RENDERS_MAX_JOBS): wait for one to finish, or delete one.",
                retry_after_seconds=RETRY_AFTER_SECONDS,
            )
        oldest = min(finished, key=lambda job: job.finished_at or 0.0)
        del self._jobs[oldest.id]
        _remove(oldest.path)
        logger.info("render %s removed to make room for a new one", oldest.id)

    async def _run(self, job: RenderJob, speech: SpeechSource) -> None:
        partial = job.path.with_name(job.path.name + ".part")
        try:
            async with self._running:
                job.state = RenderState.RUNNING
                if self._admission is not None:
                    self._admission.render_started(job.id, job.fps)
                samples = await speech()
                job.duration_seconds = round(len(samples) / SAMPLE_RATE, 3)
                if job.duration_seconds > self._max_audio_seconds:
                    raise Refusal(
                        f"The speech lasts {job.duration_seconds:.1f} s; the limit is "
                        f"{self._max_audio_seconds:g} s (MAX_AUDIO_SECONDS)."
                    )
                job.frame_count = frame_count(samples, job.fps)
                avatar = await self._avatars.acquire(job.avatar_id)
                try:
                    await render_clip(
                        samples, avatar, self._worker, job.fps, partial, job.id,
                        lambda share: setattr(job, "progress", round(share, 4)),
                    )
                finally:
                    self._avatars.release(job.avatar_id)
                partial.replace(job.path)
                job.progress = 1.0
                job.state = RenderState.DONE
                logger.info(
                    "render %s done: %.2f s of speech, %d frames at %d fps",
                    job.id, job.duration_seconds, job.frame_count, job.fps,
                )
        except asyncio.CancelledError:
            _remove(partial)
            raise
        except Exception as error:
            _remove(partial)
            job.state = RenderState.FAILED
            job.error = error.message if isinstance(error, Refusal) else f"rendering failed: {error}"
            if not isinstance(error, Refusal):
                logger.exception("render %s failed", job.id)
        finally:
            if self._admission is not None:
                self._admission.release_render(job.id)
            if job.finished:
                job.finished_at = time.monotonic()

    async def _stop(self, job: RenderJob) -> None:
        task = job.task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _sweep(self) -> None:
        interval = min(max(self._ttl / 4, MIN_SWEEP_SECONDS), MAX_SWEEP_SECONDS)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for job in list(self._jobs.values()):
                if job.finished_at is not None and now - job.finished_at >= self._ttl:
                    self._jobs.pop(job.id, None)
                    _remove(job.path)
                    logger.info("render %s expired (RENDERS_TTL_SECONDS)", job.id)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
