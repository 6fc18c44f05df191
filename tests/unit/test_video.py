"""The operator's video: limits and unusable files are refused with a clear sentence."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from server.avatars.errors import VideoError
from server.avatars.video import VideoLimits, probe_video, read_frames, write_video
from tests.avatar_files import audio_only_file, face_video

LIMITS = VideoLimits(min_seconds=1.0, max_seconds=3.0, max_frame_side=512)


def refusal(path: Path, limits: VideoLimits = LIMITS) -> VideoError:
    with pytest.raises(VideoError) as caught:
        probe_video(path, limits)
    return caught.value


def test_a_video_within_the_limits_is_described(tmp_path: Path) -> None:
    info = probe_video(face_video(tmp_path / "face.mp4", 2.0, size=128), LIMITS)
    assert (info.width, info.height, info.fps, info.codec) == (128, 128, 25.0, "h264")
    assert info.duration == pytest.approx(2.0, abs=0.05) and info.frame_count == 50


def test_frames_are_decoded_in_order_as_rgb(tmp_path: Path) -> None:
    path = tmp_path / "colors.mkv"
    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    write_video(path, [np.full((64, 96, 3), c, np.uint8) for c in colors], 25)
    frames = list(read_frames(path))
    assert [f.shape for f in frames] == [(64, 96, 3)] * 3
    for frame, color in zip(frames, colors):
        assert np.abs(frame.astype(int) - color).max() < 6


def test_a_phone_video_recorded_sideways_is_turned_upright(tmp_path: Path) -> None:
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(90)
        image = np.zeros((32, 64, 3), np.uint8)
        image[:, :16] = 255  # a white band on the left of the stored picture
        for _ in range(30):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    info = probe_video(path, LIMITS)
    assert (info.width, info.height) == (32, 64)
    frame = next(read_frames(path))
    assert frame.shape == (64, 32, 3)
    assert frame[-8:].mean() > 200 and frame[:40].mean() < 30  # turned 90 degrees anticlockwise


def test_a_file_that_is_not_a_video_is_400(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_bytes(b"these are not the frames you are looking for " * 100)
    error = refusal(path)
    assert error.status == 400 and "could not be read as a video" in error.message


def test_audio_without_a_picture_is_415(tmp_path: Path) -> None:
    error = refusal(audio_only_file(tmp_path / "speech.m4a"))
    assert error.status == 415 and "no video stream (found: audio)" in error.message


def test_too_long_is_413_with_the_limit(tmp_path: Path) -> None:
    error = refusal(face_video(tmp_path / "long.mp4", 4.0, size=64))
    assert error.status == 413 and "4.0 s long; at most 3 s" in error.message


def test_frames_too_large_are_413_with_the_limit(tmp_path: Path) -> None:
    error = refusal(face_video(tmp_path / "large.mp4", 1.2, size=640))
    assert error.status == 413 and "640x640" in error.message and "at most 512 pixels" in error.message


def test_too_short_is_422_with_the_minimum(tmp_path: Path) -> None:
    error = refusal(face_video(tmp_path / "short.mp4", 0.4, size=64))
    assert error.status == 422 and "0.4 s long; at least 1 s" in error.message
