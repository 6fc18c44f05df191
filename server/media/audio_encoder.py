"""Opus encoding of the avatar's voice: 20 ms of 48 kHz mono in, one Opus packet out.

aiortc's own encoder upmixes every frame to stereo through a resampler and encodes two
channels at 96 kbps. The voice is mono, so it is encoded as mono Opus (a packet's TOC byte
says so; every WebRTC decoder, negotiated for opus/48000/2, plays it on both channels):
0.075 ms a frame instead of 0.138 (`OPUS_BITRATE`, this box), at half the bandwidth.
"""

from __future__ import annotations

import av
import numpy as np

from server.media.clock import AUDIO_SAMPLE_RATE, AUDIO_SAMPLES_PER_FRAME, AUDIO_TIME_BASE

OPUS_BITRATE = 64_000
"""Mono speech at 64 kbps is transparent in Opus; aiortc sends 96 kbps for two channels."""
OPUS_OPTIONS = {"application": "voip"}
"""aiortc's choice: tuned for speech."""


class OpusFrameEncoder:
    """One Opus stream: frames of `AUDIO_SAMPLES_PER_FRAME` int16 mono samples, each
    encoded into one packet at once (libopus has no lag at this frame size).

    Not thread-safe: one stream is encoded by one thread at a time (its track awaits each
    encode before the next).
    """

    def __init__(self, bitrate: int = OPUS_BITRATE) -> None:
        codec = av.CodecContext.create("libopus", "w")
        codec.bit_rate = bitrate
        codec.format = "s16"
        codec.layout = "mono"
        codec.sample_rate = AUDIO_SAMPLE_RATE
        codec.time_base = AUDIO_TIME_BASE
        codec.options = dict(OPUS_OPTIONS)
        self._codec = codec
        self._pts = 0
        self.frames_encoded = 0

    def encode(self, pcm: np.ndarray) -> bytes:
        """The Opus packet of `pcm`, [1, AUDIO_SAMPLES_PER_FRAME] int16, the frame after
        the last one encoded."""
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = AUDIO_SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = AUDIO_TIME_BASE
        self._pts += AUDIO_SAMPLES_PER_FRAME
        packets = self._codec.encode(frame)
        self.frames_encoded += 1
        if len(packets) != 1:  # libopus answers each whole frame with its packet
            raise RuntimeError(f"the Opus encoder gave {len(packets)} packets for one frame")
        return bytes(packets[0])
