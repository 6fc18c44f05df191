"""The voice's Opus encoder: mono packets, one per 20 ms frame, that WebRTC decoders play."""

from __future__ import annotations

import numpy as np
import pytest
from aiortc.codecs.opus import OpusDecoder
from aiortc.jitterbuffer import JitterFrame

from server.media.audio_encoder import OpusFrameEncoder
from server.media.clock import AUDIO_SAMPLES_PER_FRAME
from tests.audio_files import speech_like

STEREO_FLAG = 0x04  # in an Opus packet's TOC byte (RFC 6716, 3.1)


def test_each_frame_gives_one_mono_packet_that_decodes_to_the_voice_on_both_channels() -> None:
    speech = speech_like(1.0)
    pcm = np.round(speech * 32767).astype(np.int16)
    encoder = OpusFrameEncoder()
    decoder = OpusDecoder()  # what aiortc's receiver (and a browser) uses: stereo out
    left, right = [], []
    for k in range(len(pcm) // AUDIO_SAMPLES_PER_FRAME):
        packet = encoder.encode(pcm[k * AUDIO_SAMPLES_PER_FRAME:(k + 1) * AUDIO_SAMPLES_PER_FRAME][None, :])
        assert packet and not packet[0] & STEREO_FLAG
        for frame in decoder.decode(JitterFrame(packet, k * AUDIO_SAMPLES_PER_FRAME)):
            samples = frame.to_ndarray().reshape(-1, 2) / 32768
            left.append(samples[:, 0])
            right.append(samples[:, 1])
    assert encoder.frames_encoded == 50
    heard_left, heard_right = np.concatenate(left), np.concatenate(right)
    np.testing.assert_array_equal(heard_left, heard_right)
    # The same voice: as loud, and its bursts in place once the codec's delay is taken off.
    delay = int(np.argmax(np.correlate(heard_left[:24_000], speech[:24_000 - 960], mode="valid")))
    assert delay < 480  # Opus' lookahead: 6.5 ms (312 samples)
    aligned = heard_left[delay:delay + 40_000]
    original = speech[:40_000]
    assert np.sqrt(np.mean(aligned**2)) == pytest.approx(np.sqrt(np.mean(original**2)), rel=0.1)
    assert np.corrcoef(aligned, original)[0, 1] > 0.85  # 0.91, as aiortc's stereo 96 kbps gives
