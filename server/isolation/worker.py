"""The decode worker process: runs one task at a time, sent by its pool, under rlimits.

Runs in a process of its own (started by the forkserver, never forked from the server):
whatever the decoder does there (a crash, a hang, a runaway allocation) ends this process
at worst, and the pool answers that one request and starts a fresh worker.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# Before numpy (and its BLAS) is imported into the forkserver: one thread for the math
# libraries. Their thread pools are not needed to decode and each thread reserves address
# space that counts against RLIMIT_AS.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import resource  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from multiprocessing.connection import Connection  # noqa: E402
from typing import Any  # noqa: E402

from server.refusal import Refusal  # noqa: E402

# glibc gives each thread that allocates a malloc arena of its own, reserving 64 MiB of
# address space (128 MiB for a moment, to align it). One arena, the main one, is enough
# for a decoder's two threads and keeps RLIMIT_AS a limit on memory rather than on
# threads: with two, a decoder thread's arena failed at random near the limit (EAGAIN).
M_ARENA_MAX = -8
MALLOC_ARENAS = 1
CRASH_ON_PURPOSE = b"\x00avatar-server: abort this decode worker\x00"
"""Tests only: a task whose first argument is exactly these bytes aborts its worker (a
stand-in for a decoder bug), so that recovery is tested on a real crash, end to end."""

Reply = tuple[str, Any]
"""("ok", result) | ("item", value) | ("end", None) | ("refused", (status, message)) |
("memory", None) | ("failed", description)"""
FED = "fed"
"""The task mode of a fed stream: `function(*args)` makes an object with `feed(data)` and
`finish()`; the pool then sends ("feed", data) and at last ("finish", None), and each is
answered with ("item", object.feed(data)) and ("ok", object.finish())."""


def serve(connection: Connection, memory_bytes: int) -> None:
    """The worker's main loop: (function, args, stream, cpu_seconds) in, replies out
    (`stream`: False, True for a generator's items, or `FED`)."""
    _limit_memory(memory_bytes)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server's Ctrl-C is the server's
    while True:
        try:
            function, args, stream, cpu_seconds = connection.recv()
        except (EOFError, OSError):
            return
        _limit_cpu(cpu_seconds)
        try:
            if args and isinstance(args[0], bytes) and args[0] == CRASH_ON_PURPOSE:
                os.abort()
            if stream == FED:
                _serve_fed(connection, function(*args))
            elif stream:
                for item in function(*args):
                    connection.send(("item", item))
                connection.send(("end", None))
            else:
                connection.send(("ok", function(*args)))
        except Refusal as refusal:
            connection.send(("refused", (refusal.status, refusal.message)))
        except MemoryError:
            connection.send(("memory", None))  # the pool words the limit, and replaces us
        except Exception as error:  # a decoder bug on hostile input: this request's 4xx
            connection.send(("failed", f"{type(error).__name__}: {error}"))
        finally:
            _limit_cpu(None)


def _serve_fed(connection: Connection, decoder: Any) -> None:
    """Answer a fed stream's messages until its finish (or the pool goes away)."""
    connection.send(("ok", None))  # the decoder is made
    while True:
        try:
            kind, data = connection.recv()
        except (EOFError, OSError):
            return
        if kind == "finish":
            connection.send(("ok", decoder.finish()))
            return
        if isinstance(data, bytes) and data == CRASH_ON_PURPOSE:
            os.abort()
        connection.send(("item", decoder.feed(data)))


def _limit_memory(memory_bytes: int) -> None:
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        try:
            ctypes.CDLL(libc_name).mallopt(M_ARENA_MAX, MALLOC_ARENAS)
        except (OSError, AttributeError):
            pass  # not glibc: the limit still holds, with less headroom
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def _limit_cpu(seconds: float | None) -> None:
    """The soft CPU limit: `seconds` more than used so far (SIGXCPU past it), or none."""
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if seconds is None:
        resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + seconds) + 1
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
