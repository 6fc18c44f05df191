"""VP8 encoding into whole frames that aiortc only packetizes, from yuv420p pictures.

aiortc encodes a track's `VideoFrame`s itself, in the event loop's default thread pool,
converting each from RGB first. The tracks here hand it `av.Packet`s instead (aiortc then
only splits them into RTP payloads, inline): the server decides where encoding runs, which
frames are keyframes, and can send the same packets to many viewers (server/media/idle_share.py).
"""

from __future__ import annotations

import multiprocessing
from fractions import Fraction

import av
import cv2
import numpy as np
from av.video.frame import PictureType

from server.media.vp8_repeat import repeat_frame

VIDEO_CODEC = "libvpx"
PIXEL_FORMAT = "yuv420p"
TIME_BASE = Fraction(1, 90_000)
# The rate control aiortc's own VP8 encoder uses, so that the picture a viewer gets is the
# one it got when aiortc encoded: CBR at 500 kbps (then what the receiver's REMB asks for),
# realtime, no lag, no automatic keyframes. Two changes: a faster motion search, and no
# denoiser.
BITRATE = 500_000
BITRATE_CHANGE = 0.1
"""A new target bitrate this far from the current one reopens the encoder (a keyframe)."""
MAX_KEYFRAME_DISTANCE = 3000
MIN_QUANTIZER = 2
MAX_QUANTIZER = 56
CPU_USED = "-10"
"""libvpx's speed for realtime (aiortc's is -6). On the demo avatar speaking at 512×512,
this box: 1.86 ms a new frame instead of 2.55, 1.33 ms a repeated one instead of 1.94, for
0.1 dB less PSNR (42.66 against 42.77) at the same bitrate; -12 and -16 save little more
and lose 0.4 and 1 dB. VP8 is most of the server's CPU per speaking session."""
NOISE_SENSITIVITY = "0"
"""libvpx's temporal denoiser off (aiortc: 4, for camera input). The pictures here are
rendered or taken from a prepared video: denoising only moves them from what was drawn.
`scripts/bench_vp8.py` on this box, the demo avatar speaking at 512×512: 1.3 ms a frame
instead of 1.8-1.9 and 1.3 dB closer to the picture (51.4 dB PSNR against 50.1) at the
same size; with camera-like noise added, no slower (2.1-2.2 ms against 2.2-2.7) and 0.9 dB
closer to the clean picture (46.3 against 45.3)."""

CODEC_OPTIONS = {
    "cpu-used": CPU_USED,
    "deadline": "realtime",
    "lag-in-frames": "0",
    "noise-sensitivity": NOISE_SENSITIVITY,
    "overshoot-pct": "15",
    "partitions": "0",
    "static-thresh": "1",
    "undershoot-pct": "100",
}
# libvpx threads by picture size, as aiortc chooses them (one below 640×480).
THREAD_STEPS = ((1920 * 1080, 8, 8), (1280 * 960, 6, 3), (640 * 480, 3, 2))


def to_yuv420p(image: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """[H, W, 3] uint8 RGB → the encoder's [H * 3 / 2, W] uint8 planar yuv420p (scaled to
    `size`, (width, height), if given).

    OpenCV's conversion (BT.601, studio range, as swscale's default for yuv420p): 0.06 ms
    for 512×512 where PyAV's `reformat` takes 1.1 ms, on every rendered frame of every
    session. An odd last row or column (which 4:2:0 cannot halve) is left out."""
    if size is not None:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    height, width = image.shape[:2]
    even = image[: height // 2 * 2, : width // 2 * 2]
    return cv2.cvtColor(np.ascontiguousarray(even), cv2.COLOR_RGB2YUV_I420)


def yuv420p_frame(image: np.ndarray, size: tuple[int, int] | None = None) -> av.VideoFrame:
    """[H, W, 3] uint8 RGB → a yuv420p frame the encoder takes as it is (scaled to `size`,
    (width, height), if given)."""
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    if size is None:
        return frame.reformat(format=PIXEL_FORMAT)
    return frame.reformat(width=size[0], height=size[1], format=PIXEL_FORMAT)


def scaled_size(shape: tuple[int, ...], height: int | None) -> tuple[int, int] | None:
    """Frames of `shape` (frames, h, w, 3) scaled to `height`, the width kept in proportion
    (both even, as encoders want); None when there is nothing to scale."""
    if height is None or height == shape[1]:
        return None
    width = max(2, round(shape[2] * height / shape[1] / 2) * 2)
    return width, max(2, height // 2 * 2)


def _threads(pixels: int) -> int:
    cpus = multiprocessing.cpu_count()
    for min_pixels, min_cpus, threads in THREAD_STEPS:
        if pixels > min_pixels and cpus >= min_cpus:
            return threads
    return 1


class Vp8FrameEncoder:
    """One VP8 stream: yuv420p pictures in, one whole encoded frame (bytes) out per picture.

    Not thread-safe: one stream is encoded by one thread at a time (its track awaits each
    encode before the next).
    """

    def __init__(self, options: dict[str, str] | None = None, max_quantizer: int = MAX_QUANTIZER) -> None:
        self._options = {**CODEC_OPTIONS, **(options or {})}
        self._max_quantizer = max_quantizer
        self._codec: av.VideoCodecContext | None = None
        self.bitrate = BITRATE
        self.frames_encoded = 0
        self.keyframes = 0
        self._version: int | None = None  # the stream's VP8 version, from its frame tags

    def encode(
        self, yuv: np.ndarray | av.VideoFrame, pts: int, keyframe: bool = False, bitrate: int | None = None
    ) -> tuple[bytes, bool]:
        """The encoded frame for `yuv` (planes, or a yuv420p frame this thread owns) shown at
        `pts` (90 kHz, increasing: the rate control budgets bits by time), and whether it is
        a keyframe; `bitrate`: a new target."""
        if isinstance(yuv, av.VideoFrame):
            frame = yuv
            frame.pict_type = PictureType.NONE
        else:
            frame = av.VideoFrame.from_ndarray(yuv, format=PIXEL_FORMAT)
        height, width = frame.height, frame.width
        if bitrate is not None and abs(bitrate - self.bitrate) > BITRATE_CHANGE * self.bitrate:
            self.bitrate = bitrate
            self._codec = None
        if self._codec is None or (self._codec.width, self._codec.height) != (width, height):
            self._codec = self._open(width, height, self.bitrate, self._options, self._max_quantizer)
            keyframe = True
        if keyframe:
            frame.pict_type = PictureType.I
        frame.pts = pts
        frame.time_base = TIME_BASE
        data = b"".join(bytes(packet) for packet in self._codec.encode(frame))
        self.frames_encoded += 1
        is_key = bool(data) and not data[0] & 1  # VP8 frame tag: bit 0 clear on a keyframe
        self.keyframes += is_key
        if data:
            self._version = data[0] >> 1 & 7
        return data, is_key

    def repeat(self) -> bytes | None:
        """A frame that shows the picture encoded last again, without encoding it (what
        libvpx would do with the same picture, for nothing: server/media/vp8_repeat.py);
        the encoder's next frame follows on as if it had not been sent. None before a
        first frame."""
        if self._codec is None or self._version is None:
            return None
        return repeat_frame(self._codec.width, self._codec.height, self._version)

    @staticmethod
    def _open(
        width: int, height: int, bitrate: int, options: dict[str, str], max_quantizer: int
    ) -> av.VideoCodecContext:
        codec = av.CodecContext.create(VIDEO_CODEC, "w")
        codec.width = width
        codec.height = height
        codec.bit_rate = bitrate
        codec.pix_fmt = PIXEL_FORMAT
        codec.gop_size = MAX_KEYFRAME_DISTANCE
        codec.qmin = MIN_QUANTIZER
        codec.qmax = max_quantizer
        # minrate = maxrate = bit_rate is CBR; FFmpeg makes libvpx's buffer bufsize / bit_rate s.
        codec.options = {"bufsize": str(bitrate), "minrate": str(bitrate), "maxrate": str(bitrate), **options}
        codec.thread_count = _threads(width * height)
        return codec
