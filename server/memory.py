"""Giving the heap that ended sessions freed back to the operating system.

A session allocates from many threads (aiortc's encoders in the default executor, PyAV,
the thread pools of the HTTP layer), so glibc spreads its memory over several malloc
arenas. When the session ends that memory is free but stays mapped: measured with 20
sessions connected and dropped, RSS stayed ~40-80 % above its level before
(scripts/bench_memory.py). glibc's `malloc_trim(0)` returns the free pages of every
arena; it is called once, a moment after the last of a burst of sessions has closed,
in a worker thread. Elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from contextlib import suppress

logger = logging.getLogger(__name__)

# Wait this long after a session closes: aiortc's transports finish closing in tasks of
# their own, and sessions often end in bursts (a shutdown, a load test, a network cut).
TRIM_DELAY_SECONDS = 1.0
# Sessions ending without pause for longer than this still get a trim now and then.
MAX_TRIM_WAIT_SECONDS = 10.0


def _malloc_trim() -> Callable[[], None] | None:
    """glibc's malloc_trim(0), or None where there is none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def release() -> None:
        trim(0)

    return release


class FreedMemory:
    """`release_soon()` after something big has been freed; `close()` at shutdown."""

    def __init__(self, delay: float = TRIM_DELAY_SECONDS) -> None:
        self._delay = delay
        self._trim = _malloc_trim()
        self._requested = False
        self._task: asyncio.Task[None] | None = None
        self.releases = 0

    def release_soon(self) -> None:
        if self._trim is None:
            return
        self._requested = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._release())

    async def _release(self) -> None:
        assert self._trim is not None
        loop = asyncio.get_running_loop()
        first = loop.time()
        while True:
            self._requested = False
            await asyncio.sleep(self._delay)
            if self._requested and loop.time() - first < MAX_TRIM_WAIT_SECONDS:
                continue  # more is being freed: wait for the end of the burst
            await asyncio.to_thread(self._trim)
            self.releases += 1
            if not self._requested:
                return
            first = loop.time()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
