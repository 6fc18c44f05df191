"""Avatar videos decoded in a worker process: the same frames, the same refusals, no crash here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from server.avatars.errors import VideoError
from server.avatars.video import VideoLimits, probe_video, read_frames, write_video
from server.isolation.pool import DecodeLimits, DecodePool
from tests.avatar_files import audio_only_file, face_video

LIMITS = VideoLimits(min_seconds=1.0, max_seconds=3.0, max_frame_side=512)
MIB = 1024 * 1024


@pytest.fixture
def pool() -> Iterator[DecodePool]:
    pool = DecodePool("test-video", 1, DecodeLimits(2048 * MIB, 60.0, 20.0), max_in_flight=2)
    pool.start()
    yield pool
    pool.close()


def test_an_isolated_probe_describes_the_video_as_in_process(tmp_path: Path, pool: DecodePool) -> None:
    path = face_video(tmp_path / "face.mp4", 2.0, size=128)
    assert probe_video(path, LIMITS, pool) == probe_video(path, LIMITS)


def test_isolated_frames_are_the_frames(tmp_path: Path, pool: DecodePool) -> None:
    path = tmp_path / "colors.mkv"
    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    write_video(path, [np.full((64, 96, 3), c, np.uint8) for c in colors], 25)
    isolated = list(read_frames(path, pool=pool))
    assert len(isolated) == 3
    for mine, theirs in zip(isolated, read_frames(path)):
        assert np.array_equal(mine, theirs)
    assert pool.crashes == 0


def test_isolated_refusals_are_video_errors_with_their_status(tmp_path: Path, pool: DecodePool) -> None:
    with pytest.raises(VideoError) as error:
        probe_video(audio_only_file(tmp_path / "voice.m4a"), LIMITS, pool)
    assert error.value.status == 415
    with pytest.raises(VideoError) as error:
        list(read_frames(face_video(tmp_path / "long.mp4", 2.0, size=64), 10, pool))
    assert error.value.status == 413


def test_a_video_past_the_workers_memory_is_refused_and_the_worker_replaced(
    tmp_path: Path, pool: DecodePool
) -> None:
    path = tmp_path / "big.mkv"
    write_video(path, [np.zeros((2048, 2048, 3), np.uint8)] * 2, 25)
    assert len(list(read_frames(path, pool=pool))) == 2  # with room, the file is fine
    # 12 MiB a picture as RGB, more as the decoder's frames: past the ~90 MiB to spare.
    tight = DecodePool("test-video", 1, DecodeLimits(300 * MIB, 60.0, 20.0), max_in_flight=1)
    try:
        with pytest.raises(VideoError) as error:
            list(read_frames(path, pool=tight))
        # Which allocation fails first varies: numpy's or PyAV's (MemoryError: 413), or one
        # inside the decoder, which FFmpeg reports as invalid data (400).
        assert error.value.status in (400, 413), error.value.message
        assert len(list(read_frames(face_video(tmp_path / "small.mp4", 1.0, size=64), pool=tight))) == 25
    finally:
        tight.close()


def test_a_stream_abandoned_halfway_frees_its_worker(tmp_path: Path, pool: DecodePool) -> None:
    frames = read_frames(face_video(tmp_path / "face.mp4", 2.0, size=64), pool=pool)
    next(frames)
    frames.close()
    assert probe_video(face_video(tmp_path / "again.mp4", 2.0, size=64), LIMITS, pool).fps == 25.0
