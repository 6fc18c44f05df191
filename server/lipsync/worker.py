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

from server.lipsync.engine import LipSyncEngine, RenderRequest

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


class WorkerClosedError(RuntimeError):
    """The worker was closed; no more jobs are taken."""


class LipSyncWorker:
    """Runs an engine off the event loop, earliest deadline first.

    Render jobs from every session wait in one queue; the worker takes up to `max_batch`
    of the most urgent ones per engine call, so sessions share the model's batches.
    Other engine work (audio features, loading avatars) goes through `call`, in the same
    order, because it uses the same device.
    """

    def __init__(self, engine: LipSyncEngine, max_batch: int = 0) -> None:
        self.engine = engine
        self.max_batch = max_batch or engine.default_max_batch
        self.stats = WorkerStats()
        self._queue: list[_Job] = []
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
    ) -> list[asyncio.Future[np.ndarray]]:
        """Queue frames to render; `deadlines` are `time.monotonic()` instants.

        The queue takes them in the order of `wanted` (instants too; by default the
        deadlines): a frame wanted before its deadline goes ahead of frames due sooner.
        `owner` (a session) only feeds the statistics of batch sharing.
        """
        loop = asyncio.get_running_loop()
        wanted = deadlines if wanted is None else wanted
        jobs = [
            _Job(first, next(self._seq), deadline, request, None, loop.create_future(), loop, owner)
            for request, deadline, first in zip(requests, deadlines, wanted, strict=True)
        ]
        self._enqueue(jobs)
        return [job.future for job in jobs]

    async def call(self, fn: Callable[..., T], *args: Any, deadline: float | None = None) -> T:
        """Run `fn(*args)` on the worker thread and wait for its result."""
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
        return await job.future

    def close(self) -> None:
        """Stop taking jobs; queued ones fail with `WorkerClosedError`."""
        with self._wakeup:
            self._closed = True
            pending, self._queue = self._queue, []
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
            for job in jobs:
                heapq.heappush(self._queue, job)
            self._wakeup.notify()

    # --- the worker thread ----------------------------------------------------------------

    def _next_jobs(self) -> list[_Job] | None:
        with self._wakeup:
            while not self._queue and not self._closed:
                self._wakeup.wait()
            if self._closed:
                return None
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
                    results = self.engine.render([job.request for job in jobs])  # type: ignore[misc]
                    if len(results) != len(jobs):
                        raise RuntimeError(
                            f"engine {self.engine.name} returned {len(results)} frames "
                            f"for {len(jobs)} requests"
                        )
                    self.stats.batches += 1
                    self.stats.frames_rendered += len(jobs)
                    if len({job.owner for job in jobs}) > 1:
                        self.stats.shared_batches += 1
                    sizes = self.stats.batch_sizes
                    sizes[len(jobs)] = sizes.get(len(jobs), 0) + 1
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
