"""Decoding uploads: every common format in, 48 kHz mono out, clear errors otherwise."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from server.media.audio_input import SAMPLE_RATE, AudioInputError, decode_audio
from tests.audio_files import FORMATS, encode, speech_like
from tests.hostile_audio import raw_wav

SECONDS = 2.0


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return speech_like(SECONDS)


@pytest.mark.parametrize("kind", sorted(FORMATS))
@pytest.mark.parametrize("channels", [1, 2])
def test_common_formats_decode_to_48k_mono(speech: np.ndarray, kind: str, channels: int) -> None:
    decoded = decode_audio(encode(speech, kind, channels=channels), max_seconds=60)
    assert decoded.samples.dtype == np.float32
    assert decoded.samples.ndim == 1
    assert decoded.source_channels == channels
    # AAC adds its encoder delay (1024 samples) in front; everything else is exact.
    assert decoded.duration == pytest.approx(SECONDS, abs=0.025)
    # Same loudness as the original: channels are averaged, not summed.
    assert np.sqrt(np.mean(decoded.samples**2)) == pytest.approx(
        np.sqrt(np.mean(speech**2)), rel=0.1
    )


def test_44k1_is_resampled_without_shifting_the_sound(speech: np.ndarray) -> None:
    decoded = decode_audio(encode(speech, "flac"), max_seconds=60)  # flac is stored at 44.1 kHz
    assert decoded.source_rate == 44_100
    onset = np.argmax(np.abs(decoded.samples[int(0.5 * SAMPLE_RATE):]) > 0.05) + int(0.5 * SAMPLE_RATE)
    expected = np.argmax(np.abs(speech[int(0.5 * SAMPLE_RATE):]) > 0.05) + int(0.5 * SAMPLE_RATE)
    assert abs(int(onset) - int(expected)) < 48  # within 1 ms


def test_empty_upload_is_400() -> None:
    with pytest.raises(AudioInputError) as error:
        decode_audio(b"", max_seconds=60)
    assert error.value.status == 400
    assert "empty" in error.value.message


def test_text_is_415() -> None:
    with pytest.raises(AudioInputError) as error:
        decode_audio(b"this is not audio at all " * 100, max_seconds=60)
    assert error.value.status == 415


def test_video_without_audio_is_415() -> None:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 40, np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(AudioInputError) as error:
        decode_audio(buffer.getvalue(), max_seconds=60)
    assert error.value.status == 415
    assert "no audio stream" in error.value.message


@pytest.mark.parametrize("kind", ["wav", "mp3"])
def test_truncated_upload_is_400(speech: np.ndarray, kind: str) -> None:
    data = encode(speech, kind)
    with pytest.raises(AudioInputError) as error:
        decode_audio(data[: len(data) // 3], max_seconds=60)
    assert error.value.status == 400
    assert "truncated" in error.value.message


def test_too_long_is_413(speech: np.ndarray) -> None:
    with pytest.raises(AudioInputError) as error:
        decode_audio(encode(speech, "ogg"), max_seconds=1.0)
    assert error.value.status == 413
    assert "1 s" in error.value.message


def test_too_long_without_a_declared_duration_is_413() -> None:
    # A streamed WAV declares no length; the decoder stops once past the limit.
    data = bytearray(encode(speech_like(3.0), "wav"))
    data[4:8] = b"\xff\xff\xff\xff"
    size_at = data.index(b"data") + 4
    data[size_at : size_at + 4] = b"\xff\xff\xff\xff"
    with pytest.raises(AudioInputError) as error:
        decode_audio(bytes(data), max_seconds=1.0)
    assert error.value.status == 413


def test_a_wav_is_probed_from_its_header_and_decodes_whole(speech: np.ndarray) -> None:
    """WAV files are probed from their first 4 KB only: with 100 KB of metadata (a LIST
    chunk) ahead of the audio, the whole sound still comes out, as without it."""
    wav = encode(speech, "wav", channels=2)
    assert wav[12:16] == b"fmt "
    padding = 100_000
    chunk = b"LIST" + padding.to_bytes(4, "little") + b"\0" * padding
    padded = wav[:4] + (len(wav) - 8 + len(chunk)).to_bytes(4, "little") + wav[8:12] + chunk + wav[12:]
    plain, metadata_first = decode_audio(wav, 60), decode_audio(padded, 60)
    assert metadata_first.source_channels == 2
    assert len(plain.samples) == pytest.approx(SECONDS * SAMPLE_RATE, abs=SAMPLE_RATE * 0.01)
    np.testing.assert_array_equal(metadata_first.samples, plain.samples)


@pytest.mark.parametrize(
    ("dtype", "offset", "scale"),
    [(np.uint8, 128, 2**7), (np.int16, 0, 2**15), (np.int32, 0, 2**31), (np.float32, 0, 1), (np.float64, 0, 1)],
)
def test_mono_samples_of_every_pcm_format_come_out_exactly(dtype: type, offset: int, scale: int) -> None:
    """Mono goes straight to float32 (no mix): the values are those of the float64 mix,
    full scale clipped to 1, and doubles far outside [-1, 1] clipped, not refused."""
    rng = np.random.default_rng(7)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, 48_000, endpoint=True, dtype=dtype)
        values[:2] = [info.min, info.max]
    else:
        values = rng.uniform(-1.2, 1.2, 48_000).astype(dtype)
        values[:2] = [-1e30, 1e30]
    decoded = decode_audio(raw_wav(values, SAMPLE_RATE), max_seconds=60)
    expected = np.clip((values.astype(np.float64) - offset) / scale, -1.0, 1.0).astype(np.float32)
    np.testing.assert_array_equal(decoded.samples, expected)


def test_mono_float_samples_that_are_not_numbers_are_400() -> None:
    values = np.zeros(4800, np.float32)
    values[100] = np.nan
    with pytest.raises(AudioInputError) as error:
        decode_audio(raw_wav(values, SAMPLE_RATE), max_seconds=60)
    assert error.value.status == 400
    assert "not numbers" in error.value.message
