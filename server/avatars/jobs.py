"""Avatar preparations started over HTTP: background jobs, one running at a time."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from server.avatars.errors import AvatarError, AvatarInUseError
from server.avatars.preparation import Preparation, PreparationRequest, Preparer, file_sha256
from server.avatars.store import check_new_avatar_id
from server.avatars.video import probe_video

logger = logging.getLogger(__name__)

Finisher = Callable[[Preparation], Awaitable[None]]
"""Work after a preparation, before its job is done (the engine's precomputation)."""

FINISHED_JOBS_KEPT = 100
"""Finished jobs remembered (for GET /avatars/{id}) before the oldest are forgotten."""


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class PreparationCancelled(Exception):
    """The server is shutting down; the preparation stops and leaves nothing behind."""


@dataclass
class PreparationJob:
    request: PreparationRequest
    state: JobState = JobState.QUEUED
    progress: float = 0.0
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error_status: int | None = None
    error: str | None = None
    result: Preparation | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def avatar_id(self) -> str:
        return self.request.avatar_id

    @property
    def active(self) -> bool:
        return self.state in (JobState.QUEUED, JobState.RUNNING)

    def report(self, share: float) -> None:
        """The preparation's progress callback (on its thread); also where it gets cancelled."""
        if self.cancelled.is_set():
            raise PreparationCancelled()
        self.progress = max(self.progress, min(share, 1.0))


class PreparationJobs:
    """Queues preparations and runs them one at a time on a thread of their own.

    A job owns its uploaded video file and removes it when it ends, however it ends.
    """

    def __init__(self, preparer: Preparer, finish: Finisher | None = None) -> None:
        self._preparer = preparer
        self._finish = finish
        self._jobs: dict[str, PreparationJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="avatar-preparation")

    def get(self, avatar_id: str) -> PreparationJob | None:
        """The latest job for `avatar_id`."""
        return self._jobs.get(avatar_id)

    def jobs(self) -> list[PreparationJob]:
        return list(self._jobs.values())

    async def submit(self, request: PreparationRequest) -> PreparationJob:
        """Queue a preparation of the video `request.video` (hashed: `request.sha256`).

        What can be known before the work starts is checked first, so that the caller gets
        its answer at once: the id (422, 403), another job on it (409), the video's
        readability and limits (400, 413, 415, 422), an existing avatar of another video
        (409). Faces are only looked for by the job itself.
        """
        check_new_avatar_id(request.avatar_id)
        current = self._jobs.get(request.avatar_id)
        if current is not None and current.active:
            raise AvatarInUseError(
                f"Avatar {request.avatar_id!r} is being prepared already; "
                f"follow GET /avatars/{request.avatar_id} until it is done."
            )
        job = PreparationJob(request)
        self._jobs.pop(request.avatar_id, None)
        self._jobs[request.avatar_id] = job  # holds the id while the checks await
        try:
            await asyncio.to_thread(
                probe_video, request.video, self._preparer.limits, self._preparer.decoders
            )
            sha256 = request.sha256 or await asyncio.to_thread(file_sha256, request.video)
            self._preparer.check_replaceable(request.avatar_id, sha256, request.force)
        except BaseException:
            del self._jobs[request.avatar_id]
            if current is not None:
                self._jobs[request.avatar_id] = current
            raise
        self._forget_oldest()
        task = asyncio.create_task(self._run(job), name=f"prepare-{request.avatar_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    def forget(self, avatar_id: str) -> None:
        """Drop a finished job's record (its avatar was deleted)."""
        job = self._jobs.get(avatar_id)
        if job is not None and not job.active:
            del self._jobs[avatar_id]

    async def close(self) -> None:
        """Cancel queued and running jobs and wait until they have cleaned up."""
        for job in self._jobs.values():
            job.cancelled.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def _run(self, job: PreparationJob) -> None:
        loop = asyncio.get_running_loop()
        try:
            # The executor's single thread runs one preparation at a time, in submission order.
            future = loop.run_in_executor(self._executor, self._prepare, job)
            job.result = await asyncio.shield(future)
            if self._finish is not None:
                await self._finish(job.result)
            job.state, job.progress = JobState.DONE, 1.0
        except (asyncio.CancelledError, PreparationCancelled):
            job.cancelled.set()
            with contextlib.suppress(Exception):
                await future  # until the preparation has removed what it wrote
            self._fail(job, 503, "The server shut down before the preparation finished.")
        except AvatarError as error:
            self._fail(job, error.status, error.message)
        except Exception:
            logger.exception("preparing avatar %s failed", job.avatar_id)
            self._fail(job, 500, "The preparation failed unexpectedly; the server log has the details.")
        finally:
            job.finished_at = time.time()
            job.request.video.unlink(missing_ok=True)

    def _prepare(self, job: PreparationJob) -> Preparation:
        job.report(0.0)
        job.state, job.started_at = JobState.RUNNING, time.time()
        return self._preparer.prepare(job.request, job.report)

    def _fail(self, job: PreparationJob, status: int, message: str) -> None:
        job.state, job.error_status, job.error = JobState.FAILED, status, message
        logger.warning("preparing avatar %s failed (%d): %s", job.avatar_id, status, message)

    def _forget_oldest(self) -> None:
        finished = [job for job in self._jobs.values() if not job.active]
        finished.sort(key=lambda job: job.submitted_at)
        for job in finished[: max(0, len(finished) - FINISHED_JOBS_KEPT)]:
            del self._jobs[job.avatar_id]
