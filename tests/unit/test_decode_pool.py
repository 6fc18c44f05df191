"""The decode pool: tasks run in limited worker processes; whatever they do, the pool lives."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest

from server.isolation.pool import DecodeBusyError, DecodeError, DecodeLimits, DecodePool
from server.isolation.worker import CRASH_ON_PURPOSE
from server.media.audio_input import decode_audio

MIB = 1024 * 1024
LIMITS = DecodeLimits(memory_bytes=512 * MIB, cpu_seconds=2.0, wall_seconds=20.0)


def spin() -> None:
    """Burns CPU until stopped."""
    while True:
        pass


def count_to(n: int) -> Iterator[int]:
    yield from range(n)


@pytest.fixture
def pool() -> Iterator[DecodePool]:
    pool = DecodePool("test-decode", 1, LIMITS, max_in_flight=2)
    pool.start()
    yield pool
    pool.close()


def test_a_task_runs_in_another_process(pool: DecodePool) -> None:
    assert pool.call(os.getpid) not in (os.getpid(), None)
    assert pool.call(os.getpid) == pool.worker_pids()[0]  # the worker is reused


def test_a_refusal_in_the_task_keeps_its_status_and_sentence(pool: DecodePool) -> None:
    with pytest.raises(DecodeError) as error:
        pool.call(decode_audio, b"", 10.0)
    assert error.value.status == 400
    assert "empty" in error.value.message


def test_a_crashed_worker_costs_its_task_a_400_and_is_replaced(pool: DecodePool) -> None:
    before = pool.call(os.getpid)
    with pytest.raises(DecodeError) as error:
        pool.call(abs, CRASH_ON_PURPOSE)
    assert error.value.status == 400
    assert "crash" in error.value.message
    after = pool.call(os.getpid)
    assert after != before
    assert pool.crashes == 1


def test_a_hang_is_stopped_at_the_wall_time_limit() -> None:
    pool = DecodePool("test-decode", 1, DecodeLimits(512 * MIB, 30.0, 1.0), max_in_flight=1)
    try:
        started = time.monotonic()
        with pytest.raises(DecodeError) as error:
            pool.call(time.sleep, 60)
        assert error.value.status == 413
        assert "longer than 1 s" in error.value.message
        assert time.monotonic() - started < 10
        assert pool.call(abs, -2) == 2
    finally:
        pool.close()


def test_a_task_past_its_cpu_time_is_stopped(pool: DecodePool) -> None:
    with pytest.raises(DecodeError) as error:
        pool.call(spin)
    assert error.value.status == 413
    assert "CPU time" in error.value.message
    assert pool.call(abs, -3) == 3


def test_cpu_time_is_counted_per_task_not_per_worker(pool: DecodePool) -> None:
    # Each call uses a fraction of the limit; together, well past it.
    while pool.call(time.process_time) < 2 * LIMITS.cpu_seconds + 1:
        pool.call(sum, range(5_000_000))
    assert pool.crashes == 0


def test_an_allocation_past_the_memory_limit_is_413(pool: DecodePool) -> None:
    with pytest.raises(DecodeError) as error:
        pool.call(bytearray, 1024 * MIB)
    assert error.value.status == 413
    assert "512 MiB" in error.value.message
    assert pool.call(abs, -4) == 4


async def test_tasks_past_the_in_flight_bound_get_503_with_retry_after(pool: DecodePool) -> None:
    running = [asyncio.ensure_future(pool.run(time.sleep, 1.0)) for _ in range(2)]
    await asyncio.sleep(0.1)
    with pytest.raises(DecodeBusyError) as error:
        await pool.run(abs, -1)
    assert error.value.status == 503
    assert error.value.extra["retry_after_seconds"] > 0
    await asyncio.gather(*running)
    assert await pool.run(abs, -5) == 5


def test_a_stream_yields_every_item(pool: DecodePool) -> None:
    assert list(pool.stream(count_to, 5)) == [0, 1, 2, 3, 4]
    assert pool.crashes == 0


def test_a_stream_left_unfinished_costs_only_its_worker(pool: DecodePool) -> None:
    items = pool.stream(count_to, 10_000)
    assert next(items) == 0
    items.close()
    assert pool.crashes == 1
    assert pool.call(abs, -6) == 6


def test_closing_stops_every_worker() -> None:
    pool = DecodePool("test-decode", 2, LIMITS, max_in_flight=2)
    pool.start()
    pids = pool.worker_pids()
    assert len(pids) == 2
    pool.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
