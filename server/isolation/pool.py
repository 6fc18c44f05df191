"""`DecodePool`: reusable worker processes that decode untrusted media under limits.

Each worker is a process of its own with an address-space limit (RLIMIT_AS), a CPU-time
limit per task (RLIMIT_CPU, moved forward before each task) and a wall-time limit watched
from here. Whatever a hostile file makes the decoder do, the request that sent it gets a
4xx and the worker is replaced; the server process itself never runs the decoder.

Workers come from the forkserver: the server has threads (aiortc, the render worker) and a
forked copy of a threaded process may deadlock; the forkserver is a fresh, single-threaded
process that imports the decoders once, so a replacement worker starts in milliseconds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import queue
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from server.isolation.worker import FED, serve
from server.refusal import Refusal

logger = logging.getLogger(__name__)

T = TypeVar("T")

START_METHOD = "forkserver"
# Imported once by the forkserver, so that each worker starts with the decoders loaded.
PRELOAD = [
    "server.isolation.worker", "server.media.audio_input", "server.media.encoded_stream",
    "server.avatars.video",
]
# How long a dying worker is given to report its exit status before it is killed.
EXIT_WAIT_SECONDS = 2.0
RETRY_AFTER_SECONDS = 1.0
"""What a client refused for a full pool is told to wait: a decode takes well under that."""
MIB = 1024 * 1024


@dataclass(frozen=True)
class DecodeLimits:
    """What one task in a worker may use."""

    memory_bytes: int
    """The worker's address space (RLIMIT_AS), its imported libraries included."""
    cpu_seconds: float
    wall_seconds: float
    """For a streaming task: the longest wait for its next item."""


RECYCLED = "recycled after a failed task"
"""How `_replace` names a worker that answered but failed: its heap may be left at the
limit (FFmpeg reports an allocation failed at RLIMIT_AS as bad data), so it is not reused."""


class DecodeError(Refusal):
    """The worker could not decode the file: 400 crashed, 413 past a limit, 422 unusable."""


class DecodeBusyError(Refusal):
    """Every decode slot is taken (server-wide DECODE_MAX_IN_FLIGHT)."""

    status = 503


class _Worker:
    """One worker process and the pipe it takes tasks from."""

    def __init__(self, context: Any, memory_bytes: int, name: str) -> None:
        ours, theirs = context.Pipe(duplex=True)
        self.process = context.Process(
            target=serve, args=(theirs, memory_bytes), name=name, daemon=True
        )
        self.process.start()
        theirs.close()
        self.connection: Connection = ours

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.is_alive()

    def exit_signal(self) -> int | None:
        """The signal that ended the process, once it has ended by one."""
        self.process.join(EXIT_WAIT_SECONDS)
        code = self.process.exitcode
        return -code if code is not None and code < 0 else None

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(EXIT_WAIT_SECONDS)
        self.connection.close()


class DecodePool:
    """`workers` decode processes; at most `max_in_flight` tasks running or waiting for one."""

    def __init__(
        self,
        name: str,
        workers: int,
        limits: DecodeLimits,
        max_in_flight: int,
        on_replaced: Callable[[str], None] | None = None,
    ) -> None:
        """`on_replaced(cause)` is told each time a worker is replaced (`found_dead`: it
        died between tasks; `lost`: it crashed, hit a limit or was left mid-stream)."""
        self.name = name
        self._on_replaced = on_replaced
        self.limits = limits
        self.max_in_flight = max_in_flight
        self._size = workers
        self._context = multiprocessing.get_context(START_METHOD)
        self._idle: queue.SimpleQueue[_Worker | None] = queue.SimpleQueue()
        self._workers: set[_Worker] = set()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._started = False
        self._closed = False
        self._executor = ThreadPoolExecutor(max_in_flight, thread_name_prefix=f"{name}-pool")
        self.crashes = 0
        """Workers replaced since the start: lost to a crash, a limit or a hang, or left
        in the middle of a stream."""

    # --- life --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers (blocking; also done by the first task)."""
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
            self._context.set_forkserver_preload(PRELOAD)
            for _ in range(self._size):
                self._idle.put(self._new_worker())
        logger.info(
            "%s pool: %d workers, %d MiB each, %g s CPU and %g s per task",
            self.name, self._size, self.limits.memory_bytes // MIB,
            self.limits.cpu_seconds, self.limits.wall_seconds,
        )

    def close(self) -> None:
        """Stop every worker; tasks still running get a 503."""
        with self._lock:
            self._closed = True
            workers = list(self._workers)
            self._workers.clear()
        for worker in workers:
            worker.stop()
        for _ in range(self.max_in_flight):
            self._idle.put(None)  # wakes whoever waits for a worker
        self._executor.shutdown(wait=False, cancel_futures=True)

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in self._workers if w.pid is not None]

    # --- tasks -------------------------------------------------------------------------------

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` in a worker; 503 when `max_in_flight` tasks are there already.

        `function` and its arguments and result travel by pickle: a module-level function.
        Raises `DecodeError` (400, 413, 422) and whatever `Refusal` the function raised.
        """
        self._take_slot()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, functools.partial(self.call, function, *args)
            )
        finally:
            self._release_slot()

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` in a worker, blocking this thread until it is done.

        A worker whose task failed in any way is replaced, not reused: an allocation that
        failed at the memory limit inside FFmpeg is reported as bad data, and leaves the
        worker's heap at the limit.
        """
        worker = self._checkout()
        answered: str | None = None  # the kind of answer, if the worker gave one
        try:
            worker.connection.send((function, args, False, self.limits.cpu_seconds))
            answered, value = self._receive(worker)
            return self._result(answered, value)
        finally:
            self._checkin(worker, answered)

    def stream(self, function: Callable[..., Any], *args: Any) -> Iterator[Any]:
        """The items of generator `function(*args)`, produced in a worker as they are read.

        The worker is held until the generator ends; one that is left unfinished costs its
        worker, which is replaced.
        """
        worker = self._checkout()
        answered: str | None = None
        try:
            worker.connection.send((function, args, True, self.limits.cpu_seconds))
            while True:
                kind, value = self._receive(worker)
                if kind == "item":
                    yield value
                    continue
                answered = kind
                if kind == "end":
                    return
                self._result(kind, value)
        finally:
            self._checkin(worker, answered)

    async def open_fed(self, factory: Callable[..., Any], *args: Any) -> FedStream:
        """A stream decoded in a worker of its own as its pieces arrive (`FedStream`).

        `factory(*args)` runs in the worker and makes the decoder: an object with
        `feed(data)` and `finish()`, whose results travel back by pickle. The stream takes
        one of `max_in_flight` slots (503 beyond) and a fresh worker, not one of the pool's,
        so that a long stream never makes uploads wait; the worker goes when it ends. Its
        limits: the pool's memory, its CPU time over the whole stream, its wall time for
        each answer.
        """
        self._take_slot()
        try:
            loop = asyncio.get_running_loop()
            worker = await loop.run_in_executor(
                self._executor, functools.partial(self._start_fed, factory, args)
            )
        except BaseException:
            self._release_slot()
            raise
        return FedStream(self, worker)

    # --- inside ------------------------------------------------------------------------------

    def _take_slot(self) -> None:
        with self._lock:
            if self._in_flight >= self.max_in_flight:
                raise DecodeBusyError(
                    f"The server is decoding as many files as it may at once "
                    f"({self.max_in_flight}); send this one again in a moment.",
                    retry_after_seconds=RETRY_AFTER_SECONDS,
                )
            self._in_flight += 1

    def _release_slot(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _start_fed(self, factory: Callable[..., Any], args: tuple[Any, ...]) -> _Worker:
        self.start()
        with self._lock:
            if self._closed:
                raise DecodeBusyError("The server is shutting down.")
            worker = self._new_worker()
        try:
            worker.connection.send((factory, args, FED, self.limits.cpu_seconds))
            self._result(*self._receive(worker))
        except BaseException:
            self._retire(worker, crashed=False)
            raise
        return worker

    def _retire(self, worker: _Worker, crashed: bool) -> None:
        """Stop a fed stream's worker (it is not one of the pool's); count it if it crashed."""
        worker.stop()
        with self._lock:
            self._workers.discard(worker)
        if crashed:
            self.crashes += 1
            if self._on_replaced is not None:
                self._on_replaced("lost")

    def _new_worker(self) -> _Worker:
        worker = _Worker(self._context, self.limits.memory_bytes, f"{self.name}-worker")
        self._workers.add(worker)
        return worker

    def _checkout(self) -> _Worker:
        self.start()
        while True:
            worker = self._idle.get()
            if worker is None or self._closed:
                self._idle.put(None)
                raise DecodeBusyError("The server is shutting down.")
            if worker.alive():
                return worker
            self._replace(worker, "found dead")

    def _checkin(self, worker: _Worker, answered: str | None) -> None:
        """Reuse a worker whose task succeeded; replace any other (`answered`: the kind of
        its last answer, None when it gave none: it crashed, hung or was left mid-stream)."""
        if self._closed:
            return
        if answered in ("ok", "end") and worker.alive():
            self._idle.put(worker)
        elif answered is not None and worker.alive():
            self._replace(worker, RECYCLED)
        else:
            self._replace(worker, "lost")

    def _replace(self, worker: _Worker, how: str) -> None:
        if how != RECYCLED:  # a worker that refused a file is not a crash
            self.crashes += 1
            if self._on_replaced is not None:
                self._on_replaced(how.replace(" ", "_"))
        worker.stop()
        with self._lock:
            self._workers.discard(worker)
            if self._closed:
                return
            fresh = self._new_worker()
        logger.log(
            logging.INFO if how == RECYCLED else logging.WARNING,
            "%s pool: worker %s %s (exit code %s); started worker %s",
            self.name, worker.pid, how, worker.process.exitcode, fresh.pid,
        )
        self._idle.put(fresh)

    def _receive(self, worker: _Worker) -> tuple[str, Any]:
        wall = self.limits.wall_seconds
        try:
            if not worker.connection.poll(wall):
                raise DecodeError(
                    f"Decoding the file took longer than {wall:g} s, so it was "
                    "stopped; send a shorter or simpler file.",
                    413,
                )
            return worker.connection.recv()
        except (EOFError, OSError):
            pass
        if self._closed:
            raise DecodeBusyError("The server is shutting down.")
        if worker.exit_signal() == signal.SIGXCPU:
            raise DecodeError(
                f"Decoding the file needed more than {self.limits.cpu_seconds:g} s of CPU time, "
                "so it was stopped; send a shorter or simpler file.",
                413,
            )
        raise DecodeError(
            "The file made the decoder crash: it is damaged or malformed. "
            "Send an intact file in a common format.",
            400,
        )

    def _result(self, kind: str, value: Any) -> Any:
        if kind == "ok":
            return value
        if kind == "refused":
            status, message = value
            raise DecodeError(message, status)
        if kind == "memory":
            raise DecodeError(
                "Decoding the file needed more memory than the limit of "
                f"{self.limits.memory_bytes // MIB} MiB; send a shorter or smaller file.",
                413,
            )
        logger.info("%s pool: a task failed: %s", self.name, value)
        raise DecodeError(
            "The file could not be decoded: it is damaged or not what it claims to be.", 400
        )


class FedStream:
    """One stream being decoded in its own worker (`DecodePool.open_fed`): `feed` each
    piece as it arrives, then `finish`; `close` when it is abandoned.

    Raises `DecodeError` as `DecodePool.run` does (400 the worker crashed, 413 past a
    limit, the decoder's own refusals); after one, the stream is over.
    """

    def __init__(self, pool: DecodePool, worker: _Worker) -> None:
        self._pool = pool
        self._worker = worker
        self._lock = threading.Lock()  # guards `closed`: the stream ends once
        self.closed = False

    async def feed(self, data: bytes) -> Any:
        """What the decoder makes of `data` (with all that came before)."""
        return await self._ask("feed", data)

    async def finish(self) -> Any:
        """The decoder's last output; the stream is then closed."""
        try:
            return await self._ask("finish", None)
        finally:
            self.close()

    def close(self) -> None:
        """End the stream and its worker (idempotent; an exchange in flight fails)."""
        self._end(crashed=False)

    def _end(self, crashed: bool) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        self._pool._retire(self._worker, crashed)
        self._pool._release_slot()

    async def _ask(self, kind: str, data: Any) -> Any:
        if self.closed:
            raise DecodeError("The stream's decoding has already ended.", 400)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool._executor, functools.partial(self._exchange, kind, data)
        )

    def _exchange(self, kind: str, data: Any) -> Any:
        pool = self._pool
        try:
            self._worker.connection.send((kind, data))
            answer = pool._receive(self._worker)
        except (DecodeError, DecodeBusyError, OSError) as error:
            self._end(crashed=not self.closed and not pool._closed)
            if isinstance(error, OSError):
                raise DecodeError(
                    "The stream made the decoder crash: it is damaged or malformed.", 400
                ) from None
            raise
        if answer[0] in ("item", "ok"):
            return answer[1]
        self.close()
        return pool._result(*answer)
