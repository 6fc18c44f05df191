"""Writing an MP4 file (H.264 video, AAC audio) with PyAV, frames and audio interleaved."""

from __future__ import annotations

import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from server.media.audio_input import SAMPLE_RATE

VIDEO_CODEC = "libx264"
AUDIO_CODEC = "aac"
PIXEL_FORMAT = "yuv420p"
VIDEO_OPTIONS = {"preset": "veryfast", "crf": "20"}
AUDIO_BIT_RATE = 128_000
AAC_FRAME_SAMPLES = 1024
# The index at the start of the file, so that a browser plays it before it has all of it.
CONTAINER_OPTIONS = {"movflags": "+faststart"}


class Mp4Writer:
    """An MP4 being written: `add_video` frames ([H, W, 3] uint8 RGB) at `fps` and
    `add_audio` (float32 mono at 48 kHz) in any order and amounts; `close` finishes it.

    yuv420p needs even sides: an odd last row or column is dropped. Blocking: run it in
    a thread; calls from several threads take turns.
    """

    def __init__(self, path: Path, fps: int, size: tuple[int, int]) -> None:
        width, height = size
        self._width, self._height = width - width % 2, height - height % 2
        self._container = av.open(str(path), mode="w", format="mp4", options=CONTAINER_OPTIONS)
        video = self._container.add_stream(VIDEO_CODEC, rate=fps, options=VIDEO_OPTIONS)
        video.width, video.height, video.pix_fmt = self._width, self._height, PIXEL_FORMAT
        video.codec_context.time_base = Fraction(1, fps)
        audio = self._container.add_stream(AUDIO_CODEC, rate=SAMPLE_RATE, layout="mono")
        audio.bit_rate = AUDIO_BIT_RATE
        self._video, self._audio = video, audio
        self._frames = 0
        self._samples = 0
        self._pending = np.zeros(0, np.float32)
        self._lock = threading.Lock()

    def add_video(self, images: list[np.ndarray]) -> None:
        with self._lock:
            for image in images:
                self._add_image(image)

    def _add_image(self, image: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(
            np.ascontiguousarray(image[: self._height, : self._width]), format="rgb24"
        )
        frame.pts = self._frames
        self._frames += 1
        self._container.mux(self._video.encode(frame))

    def add_audio(self, samples: np.ndarray) -> None:
        with self._lock:
            self._add_samples(samples)

    def _add_samples(self, samples: np.ndarray) -> None:
        self._pending = np.concatenate([self._pending, np.asarray(samples, np.float32)])
        whole = len(self._pending) - len(self._pending) % AAC_FRAME_SAMPLES
        for start in range(0, whole, AAC_FRAME_SAMPLES):
            self._encode_audio(self._pending[start : start + AAC_FRAME_SAMPLES])
        self._pending = self._pending[whole:]

    def close(self) -> None:
        """Flush both encoders and finish the file."""
        with self._lock:
            self._finish()

    def _finish(self) -> None:
        if len(self._pending):
            self._encode_audio(self._pending)  # the encoder takes a shorter last frame
            self._pending = np.zeros(0, np.float32)
        self._container.mux(self._video.encode(None))
        self._container.mux(self._audio.encode(None))
        self._container.close()

    def abort(self) -> None:
        """Close the file without finishing it (the caller removes it)."""
        with self._lock:
            self._close_unfinished()

    def _close_unfinished(self) -> None:
        try:
            self._container.close()
        except Exception:  # an unfinished file may fail to close cleanly; it is deleted
            pass

    def _encode_audio(self, block: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = Fraction(1, SAMPLE_RATE)
        frame.pts = self._samples
        self._samples += len(block)
        self._container.mux(self._audio.encode(frame))
