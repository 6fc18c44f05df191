"""Backend audio to 48 kHz mono float32: PCM16 and WAV, streamed WAV included."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from server.tts.audio import WavFormatError, pcm16_samples, read_wav, to_output_rate


def wav_bytes(samples: np.ndarray, rate: int, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((samples * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def test_a_streamed_wav_with_an_unknown_data_size_reads_to_its_end() -> None:
    tone = np.sin(np.arange(22050) / 10).astype(np.float32) * 0.5
    data = bytearray(wav_bytes(tone, 22050))
    # espeak-ng --stdout writes a placeholder size it never fills in.
    data[40:44] = (0x7FFFF000).to_bytes(4, "little")
    samples, rate = read_wav(bytes(data))
    assert rate == 22050 and len(samples) == len(tone)
    np.testing.assert_allclose(samples, tone, atol=1e-4)


def test_stereo_is_averaged_to_mono() -> None:
    interleaved = np.array([0.5, -0.5, 0.25, 0.25], np.float32)
    samples, _ = read_wav(wav_bytes(interleaved, 16000, channels=2))
    np.testing.assert_allclose(samples, [0.0, 0.25], atol=1e-4)


@pytest.mark.parametrize("data", [b"", b"not a wav file at all", b"RIFF\x00\x00\x00\x00WAVE"])
def test_what_is_not_a_pcm_wav_is_refused(data: bytes) -> None:
    with pytest.raises(WavFormatError):
        read_wav(data)


def test_24_khz_pcm_becomes_48_khz_of_the_same_length() -> None:
    pcm = (np.zeros(24000, "<i2")).tobytes()
    out = to_output_rate(pcm16_samples(pcm), 24000)
    assert out.dtype == np.float32 and len(out) == 48000
