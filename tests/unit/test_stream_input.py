"""Streamed speech formats: declared formats checked, PCM and encoded streams decoded as they arrive."""

from __future__ import annotations

import numpy as np
import pytest

from server.media.encoded_stream import EncodedStreamDecoder
from server.media.stream_input import PcmStreamDecoder, StreamFormat, StreamFormatError
from tests.audio_files import encode, speech_like
from tests.speech_streamer import ogg_opus


def decode_in_pieces(decoder, data: bytes, piece: int) -> tuple[np.ndarray, int | None]:
    out, first = [], None
    for offset in range(0, len(data), piece):
        samples = decoder.feed(data[offset : offset + piece])
        if first is None and len(samples):
            first = offset + piece
        out.append(samples)
    out.append(decoder.finish())
    return np.concatenate(out), first


@pytest.mark.parametrize("rate", [16_000, 22_050, 24_000, 44_100, 48_000])
def test_pcm_at_every_rate_becomes_48_khz_mono_of_the_same_duration(rate: int) -> None:
    voice = speech_like(1.0, rate=rate)
    data = (voice * 32767).astype("<i2").tobytes()
    decoder = PcmStreamDecoder(StreamFormat.parse("pcm_s16le", rate, 1), whole_messages=False)
    samples, first = decode_in_pieces(decoder, data, 961)  # cut inside samples
    assert len(samples) == pytest.approx(48_000, abs=2)
    assert first is not None and first <= 2 * 961
    assert np.abs(samples).max() == pytest.approx(np.abs(voice).max(), abs=0.02)


def test_stereo_float_is_averaged_to_mono() -> None:
    left = np.full(480, 0.5, np.float32)
    right = np.full(480, -0.1, np.float32)
    data = np.stack([left, right], axis=1).astype("<f4").tobytes()
    decoder = PcmStreamDecoder(StreamFormat.parse("f32le", 48_000, 2), whole_messages=True)
    np.testing.assert_allclose(decoder.feed(data), 0.2, atol=1e-6)


def test_a_message_of_part_of_a_sample_is_refused_with_the_sizes() -> None:
    decoder = PcmStreamDecoder(StreamFormat.parse("pcm_s16le", 24_000, 2), whole_messages=True)
    with pytest.raises(StreamFormatError, match="6 bytes does not hold whole samples.*4 bytes each"):
        decoder.feed(b"\0" * 6)


def test_a_body_ending_inside_a_sample_is_refused() -> None:
    decoder = PcmStreamDecoder(StreamFormat.parse("pcm_s16le", 24_000, 1), whole_messages=False)
    decoder.feed(b"\0" * 5)
    with pytest.raises(StreamFormatError, match="ends inside a sample"):
        decoder.finish()


@pytest.mark.parametrize(
    ("format", "rate", "channels", "words"),
    [
        (None, None, None, "Declare the audio format"),
        ("wav", None, None, "Unknown audio format"),
        ("pcm_s16le", 8_000, 1, "sample_rate 8000 is not supported"),
        ("pcm_s16le", "fast", 1, "whole number"),
        ("f32le", 48_000, 0, "channels must be 1 or 2"),
        ("f32le", 48_000, 6, "channels must be 1 or 2"),
    ],
)
def test_unusable_declarations_are_refused_with_a_sentence(format, rate, channels, words: str) -> None:
    with pytest.raises(StreamFormatError, match=words):
        StreamFormat.parse(format, rate, channels)


def test_mp3_decodes_as_it_arrives() -> None:
    data = encode(speech_like(1.0, rate=24_000), "mp3", rate=24_000)
    samples, first = decode_in_pieces(EncodedStreamDecoder("mp3"), data, 500)
    assert len(samples) / 48_000 == pytest.approx(1.0, abs=0.06)  # the encoder's padding
    assert first is not None and first <= len(data) / 5
    assert np.abs(samples).max() > 0.3


def test_ogg_opus_decodes_page_by_page() -> None:
    data = ogg_opus(speech_like(1.0), page_seconds=0.04)
    samples, first = decode_in_pieces(EncodedStreamDecoder("ogg_opus"), data, 400)
    assert len(samples) / 48_000 == pytest.approx(1.0, abs=0.03)
    assert first is not None and first <= len(data) / 5
    assert np.abs(samples).max() > 0.3


@pytest.mark.parametrize("format", ["mp3", "ogg_opus"])
def test_garbage_in_an_encoded_stream_is_refused(format: str) -> None:
    rng = np.random.default_rng(1)
    decoder = EncodedStreamDecoder(format)
    with pytest.raises(StreamFormatError):
        for _ in range(50):
            decoder.feed(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        decoder.finish()
