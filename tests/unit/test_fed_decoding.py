"""Streams decoded in a worker of their own as their pieces arrive (`DecodePool.open_fed`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

from server.isolation.pool import DecodeBusyError, DecodeError, DecodeLimits, DecodePool
from server.isolation.worker import CRASH_ON_PURPOSE
from server.media.encoded_stream import open_encoded_stream
from tests.audio_files import encode, speech_like
from tests.hostile_audio import encoded
from tests.speech_streamer import ogg_opus

MIB = 1024 * 1024
LIMITS = DecodeLimits(memory_bytes=512 * MIB, cpu_seconds=2.0, wall_seconds=10.0)


class Pids:
    """A fed decoder that answers each piece with the pid of the process it runs in."""

    def feed(self, data: bytes) -> int:
        if data == b"spin":
            while True:
                pass
        return os.getpid()

    def finish(self) -> str:
        return "done"


@pytest.fixture
def pool() -> Iterator[DecodePool]:
    pool = DecodePool("test-fed", 1, LIMITS, max_in_flight=2)
    pool.start()
    yield pool
    pool.close()


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def test_a_fed_stream_runs_in_a_worker_of_its_own_that_goes_when_it_ends(pool: DecodePool) -> None:
    shared = pool.worker_pids()
    stream = await pool.open_fed(Pids)
    pid = await stream.feed(b"a")
    assert pid not in (os.getpid(), *shared)
    assert await stream.feed(b"b") == pid
    assert await stream.finish() == "done"
    assert pool.worker_pids() == shared
    assert pool.crashes == 0


@pytest.mark.parametrize("format", ["mp3", "ogg_opus"])
async def test_an_encoded_stream_decodes_piece_by_piece_in_the_worker(pool: DecodePool, format: str) -> None:
    voice = speech_like(1.0, rate=48_000 if format == "ogg_opus" else 24_000)
    data = ogg_opus(voice, page_seconds=0.04) if format == "ogg_opus" else encode(voice, "mp3", rate=24_000)
    stream = await pool.open_fed(open_encoded_stream, format, 10.0)
    decoded = [await stream.feed(piece) for piece in pieces(data, 700)]
    decoded.append(await stream.finish())
    samples = np.concatenate(decoded)
    assert len(samples) / 48_000 == pytest.approx(1.0, abs=0.06)
    assert sum(len(d) for d in decoded[: len(decoded) // 4]) > 0  # audio before the end
    assert np.abs(samples).max() > 0.3


async def test_a_crash_mid_stream_is_a_400_and_the_pool_lives_on(pool: DecodePool) -> None:
    stream = await pool.open_fed(Pids)
    await stream.feed(b"a")
    with pytest.raises(DecodeError) as error:
        await stream.feed(CRASH_ON_PURPOSE)
    assert error.value.status == 400 and "crash" in error.value.message
    assert pool.crashes == 1
    with pytest.raises(DecodeError):
        await stream.feed(b"more")
    assert await (await pool.open_fed(Pids)).feed(b"a") > 0


async def test_a_stream_past_its_cpu_time_is_413() -> None:
    pool = DecodePool("test-fed", 1, DecodeLimits(512 * MIB, 1.0, 20.0), max_in_flight=2)
    try:
        stream = await pool.open_fed(Pids)
        with pytest.raises(DecodeError) as error:
            await stream.feed(b"spin")
        assert error.value.status == 413 and "CPU time" in error.value.message
    finally:
        pool.close()


async def test_an_encoded_stream_decoding_past_its_duration_is_413_within_one_piece(pool: DecodePool) -> None:
    # 60 s of silent MP3 at 8 kb/s in 60 KB: one message that would decode to 11 MB.
    data = encoded(60.0, 8_000, "mono", fmt="mp3", codec="libmp3lame", silent=True)
    stream = await pool.open_fed(open_encoded_stream, "mp3", 2.0)
    with pytest.raises(DecodeError) as error:
        await stream.feed(data)
    assert error.value.status == 413 and "MAX_AUDIO_SECONDS" in error.value.message


async def test_garbage_is_refused_with_the_decoders_sentence(pool: DecodePool) -> None:
    stream = await pool.open_fed(open_encoded_stream, "ogg_opus", 10.0)
    with pytest.raises(DecodeError) as error:
        await stream.feed(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert error.value.status == 422 and "Ogg" in error.value.message
    assert pool.crashes == 0


async def test_streams_past_the_in_flight_bound_get_503(pool: DecodePool) -> None:
    held = [await pool.open_fed(Pids) for _ in range(pool.max_in_flight)]
    with pytest.raises(DecodeBusyError):
        await pool.open_fed(Pids)
    held[0].close()
    (await pool.open_fed(Pids)).close()
    for stream in held[1:]:
        stream.close()
