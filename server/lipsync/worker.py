"""The render worker: one thread per engine that batches frames from all sessions."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from server.lipsync.engine import LipSyncEngine, LoadedAvatar, RenderRequest

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class WorkerStats:
    frames_rendered: int = 0
    batches: int = 0
    calls: int = 0
    busy_seconds: float = 0.0
    jobs_dropped: int = 0
    """Jobs whose session gave them up before they were rendered."""
    frames_late: int = 0
    """Frames delivered after their deadline."""
    shared_batches: int = 0
    """Batches that held frames of more than one session."""
    batch_sizes: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        mean = self.frames_rendered / self.batches if self.batches else 0.0
        return {
            "frames_rendered": self.frames_rendered,
            "batches": self.batches,
            "mean_batch_size": round(mean, 2),
            "calls": self.calls,
            "busy_seconds": round(self.busy_seconds, 3),
            "jobs_dropped": self.jobs_dropped,
            "frames_late": self.frames_late,
            "shared_batches": self.shared_batches,
        }


@dataclass(order=True)
class _Job:
    wanted: float
    """When the result is wanted: the queue's order. The deadline, or earlier for frames
    that something waits on (the first frames of speech that has not started)."""
    seq: int
    deadline: float = field(compare=False)
    """When a rendered frame is due; one delivered later counts as late."""
    # Either a render request or a function to call.
    request: RenderRequest | None = field(compare=False)
    call: Callable[[], Any] | None = field(compare=False)
    future: asyncio.Future[Any] = field(compare=False)
    loop: asyncio.AbstractEventLoop = field(compare=False)
    owner: Hashable = field(default=None, compare=False)
    not_before: float = field(default=0.0, compare=False)
    """A `time.monotonic()` instant the job is not started before."""


class WorkerClosedError(RuntimeError):
    """The worker was closed; no more jobs are taken."""


class LipSyncWorker:
    """Runs an engine off the event loop, earliest deadline first.

    Render jobs from every session wait in one queue; the worker takes up to `max_batch`
    of the most urgent ones per engine call, so sessions share the model's batches.
    Other engine work (audio features, loading avatars) goes through `call`, in the same
    order, because it uses the same device.
    """

    def __init__(self, engine: LipSyncEngine, max_batch: int = 0, render_ahead: float | None = None) -> None:
        self.engine = engine
        self.max_batch = max_batch or engine.default_max_batch
        self.render_ahead = engine.render_ahead_seconds if render_ahead is None else render_ahead
        """How long before a frame is wanted a session's rendering lets the worker start
        it (`render_frames`); None: at once."""
        self.stats = WorkerStats()
        self._queue: list[_Job] = []
        """Jobs that may start now, in the order they are wanted."""
        self._later: list[tuple[float, int, _Job]] = []
        """Jobs held until their `not_before`, in that order."""
        self._seq = itertools.count()
        self._wakeup = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name=f"lipsync-{engine.name}", daemon=True
        )
        self._thread.start()

    # --- called on the event loop --------------------------------------------------------

    def render(
        self,
        requests: Sequence[RenderRequest],
        deadlines: Sequence[float],
        owner: Hashable = None,
        wanted: Sequence[float] | None = None,
        not_before: Sequence[float] | None = None,
    ) -> list[asyncio.Future[np.ndarray]]:
        """Queue frames to render; `deadlines` are `time.monotonic()` instants.

        The queue takes them in the order of `wanted` (instants too; by default the
        deadlines): a frame wanted before its deadline goes ahead of frames due sooner.
        A frame is not started before its `not_before` instant (by default: at once).
        `owner` (a session) only feeds the statistics of batch sharing.
        """
        loop = asyncio.get_running_loop()
        wanted = deadlines if wanted is None else wanted
        starts = not_before if not_before is not None else [0.0] * len(requests)
        jobs = [
            _Job(first, next(self._seq), deadline, request, None, loop.create_future(), loop, owner, start)
            for request, deadline, first, start in zip(requests, deadlines, wanted, starts, strict=True)
        ]
        self._enqueue(jobs)
        return [job.future for job in jobs]

    async def call(self, fn: Callable[..., T], *args: Any, deadline: float | None = None) -> T:
        """Run `fn(*args)` on the worker thread and wait for its result."""
        return await self.queue_call(fn, *args, deadline=deadline)

    def queue_call(self, fn: Callable[..., T], *args: Any, deadline: float | None = None) -> asyncio.Future[T]:
        """Queue `fn(*args)` for the worker thread now; the future of its result."""
        loop = asyncio.get_running_loop()
        wanted = time.monotonic() if deadline is None else deadline
        job = _Job(
            wanted,
            next(self._seq),
            wanted,
            None,
            lambda: fn(*args),
            loop.create_future(),
            loop,
        )
        self._enqueue([job])
        return job.future

    def queue_features_and_first_frames(
        self,
        samples: np.ndarray,
        fps: float,
        feature_frames: range,
        first: Sequence[tuple[LoadedAvatar, int, float]],
        wanted: float,
        owner: Hashable = None,
    ) -> asyncio.Future[tuple[list[Any], list[np.ndarray]]]:
        """The engine's features of `feature_frames` (`audio_features`), and the first
        `len(first)` of those frames ((avatar, avatar index, deadline) each) rendered
        from them in the same turn of the worker: what a start of speech waits for, in
        one trip to the worker instead of two (each trip waits for the loop and the
        worker's thread to get a core: tens of ms on a busy host). Queued as wanted at
        `wanted`."""

        def features_then_frames() -> tuple[list[Any], list[np.ndarray]]:
            features = self.engine.audio_features(samples, fps, feature_frames)
            requests = [RenderRequest(avatar, index, f) for (avatar, index, _), f in zip(first, features)]
            images = self._render_counted(requests, {owner}) if requests else []
            finished = time.monotonic()
            self.stats.frames_late += sum(finished > deadline for _, _, deadline in first[: len(images)])
            return features, images

        return self.queue_call(features_then_frames, deadline=wanted)

    def close(self) -> None:
        """Stop taking jobs; queued ones fail with `WorkerClosedError`."""
        with self._wakeup:
            self._closed = True
            pending = self._queue + [job for _, _, job in self._later]
            self._queue, self._later = [], []
            self._wakeup.notify_all()
        for job in pending:
            _deliver(job, error=WorkerClosedError("the render worker was closed"))

    @property
    def running(self) -> bool:
        """Whether the worker takes jobs: not closed, and its thread alive."""
        return not self._closed and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _enqueue(self, jobs: list[_Job]) -> None:
        with self._wakeup:
            if self._closed:
                raise WorkerClosedError("the render worker was closed")
            now = time.monotonic()
            for job in jobs:
                if job.not_before > now:
                    heapq.heappush(self._later, (job.not_before, job.seq, job))
                else:
                    heapq.heappush(self._queue, job)
            self._wakeup.notify()

    # --- the worker thread ----------------------------------------------------------------

    def _next_jobs(self) -> list[_Job] | None:
        with self._wakeup:
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                while self._later and self._later[0][0] <= now:
                    heapq.heappush(self._queue, heapq.heappop(self._later)[2])
                if self._queue:
                    break
                self._wakeup.wait(self._later[0][0] - now if self._later else None)
            first = heapq.heappop(self._queue)
            jobs = [first]
            if first.request is not None:
                while (
                    self._queue
                    and len(jobs) < self.max_batch
                    and self._queue[0].request is not None
                ):
                    jobs.append(heapq.heappop(self._queue))
            return jobs

    def _run(self) -> None:
        while (taken := self._next_jobs()) is not None:
            jobs = [job for job in taken if not job.future.cancelled()]
            self.stats.jobs_dropped += len(taken) - len(jobs)
            if not jobs:
                continue
            started = time.monotonic()
            try:
                if jobs[0].call is not None:
                    self.stats.calls += 1
                    results: list[Any] = [jobs[0].call()]
                else:
                    requests = [job.request for job in jobs]
                    results = self._render_counted(requests, {job.owner for job in jobs})  # type: ignore[arg-type]
            except Exception as error:  # delivered to whoever waits for the result
                if jobs[0].request is not None:
                    logger.exception("engine %s failed to render a batch", self.engine.name)
                for job in jobs:
                    _deliver(job, error=error)
                continue
            finished = time.monotonic()
            self.stats.busy_seconds += finished - started
            for job, result in zip(jobs, results):
                if job.request is not None and finished > job.deadline:
                    self.stats.frames_late += 1
                _deliver(job, result=result)

    def _render_counted(self, requests: list[RenderRequest], owners: set[Hashable]) -> list[np.ndarray]:
        """One engine batch, on the worker's thread, counted in the statistics."""
        results = self.engine.render(requests)
        if len(results) != len(requests):
            raise RuntimeError(
                f"engine {self.engine.name} returned {len(results)} frames "
                f"for {len(requests)} requests"
            )
        self.stats.batches += 1
        self.stats.frames_rendered += len(requests)
        if len(owners) > 1:
            self.stats.shared_batches += 1
        sizes = self.stats.batch_sizes
        sizes[len(requests)] = sizes.get(len(requests), 0) + 1
        return results


def _deliver(job: _Job, result: Any = None, error: BaseException | None = None) -> None:
    def settle() -> None:
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    try:
        job.loop.call_soon_threadsafe(settle)
    except RuntimeError:
        pass  # the loop is closed: nobody is waiting any more
