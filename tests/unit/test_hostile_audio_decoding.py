"""Decoding what a careless or hostile client sends: many channels, lies, bombs, NaN."""

from __future__ import annotations

import numpy as np
import pytest

from server.isolation.pool import DecodeError, DecodeLimits, DecodePool
from server.media.audio_input import AudioInputError, decode_audio
from tests.hostile_audio import (
    WAVE_FORMAT_IEEE_FLOAT,
    encoded,
    planar_aac_7_1,
    tone,
    wav,
    without_flac_length,
)

RATE = 48_000
HALF_SCALE_RMS = 0.5 / np.sqrt(2)
MIB = 1024 * 1024


def refusal(data: bytes, **limits: float) -> AudioInputError:
    with pytest.raises(AudioInputError) as error:
        decode_audio(data, **{"max_seconds": 3.0, **limits})  # type: ignore[arg-type]
    return error.value


@pytest.mark.parametrize("channels", [8, 16, 32])
def test_wav_with_many_channels_decodes_to_mono(channels: int) -> None:
    decoded = decode_audio(wav(tone(1.0, RATE, channels), RATE), max_seconds=3.0)
    assert decoded.source_channels == channels
    assert decoded.duration == pytest.approx(1.0, abs=0.01)
    assert np.sqrt(np.mean(decoded.samples**2)) == pytest.approx(HALF_SCALE_RMS, rel=0.02)


def test_7_1_flac_decodes_to_mono() -> None:
    decoded = decode_audio(encoded(1.0, RATE, "7.1"), max_seconds=3.0)
    assert decoded.source_channels == 8
    assert np.sqrt(np.mean(decoded.samples**2)) == pytest.approx(HALF_SCALE_RMS, rel=0.02)


def test_7_1_planar_aac_decodes_to_mono() -> None:
    decoded = decode_audio(planar_aac_7_1(1.0), max_seconds=3.0)
    assert decoded.source_channels == 8
    assert np.sqrt(np.mean(decoded.samples[RATE // 10 :] ** 2)) == pytest.approx(
        HALF_SCALE_RMS, rel=0.05
    )


def test_more_channels_than_the_cap_are_413_from_the_header() -> None:
    error = refusal(wav(tone(0.1, RATE, 64), RATE), max_channels=32)
    assert error.status == 413
    assert "64 channels" in error.message


def test_a_rate_past_the_cap_is_413_from_the_header() -> None:
    error = refusal(encoded(1.0, 384_000, "stereo", silent=True), max_rate=192_000)
    assert error.status == 413
    assert "384000 Hz" in error.message


def test_a_length_bomb_without_a_declared_length_stops_at_the_limit() -> None:
    bomb = without_flac_length(encoded(20.0, RATE, "stereo", silent=True))
    assert len(bomb) < 20_000
    error = refusal(bomb, max_seconds=3.0)
    assert error.status == 413
    assert "limit of 3 s" in error.message


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("bits", [32, 64])
def test_non_finite_float_samples_are_400(value: float, bits: int) -> None:
    samples = tone(1.0, RATE, 2)
    samples[RATE // 2, 1] = value
    error = refusal(wav(samples, RATE, WAVE_FORMAT_IEEE_FLOAT, bits))
    assert error.status == 400
    assert "NaN or infinite" in error.message


def test_loud_float_samples_are_clipped_not_refused() -> None:
    decoded = decode_audio(wav(tone(1.0, RATE) * 1e30, RATE, WAVE_FORMAT_IEEE_FLOAT, 32), 3.0)
    assert np.abs(decoded.samples).max() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("format_tag", "bits"),
    [(0x55, 16), (999, 16), (1, 12), (1, 24), (1, 7), (WAVE_FORMAT_IEEE_FLOAT, 16)],
)
def test_wav_of_an_odd_format_or_depth_decodes_or_is_a_4xx(format_tag: int, bits: int) -> None:
    try:
        decoded = decode_audio(wav(tone(1.0, RATE), RATE, format_tag, bits), max_seconds=3.0)
    except AudioInputError as error:
        assert 400 <= error.status < 500
    else:
        assert np.isfinite(decoded.samples).all()


@pytest.mark.parametrize("rate", [0, 1, 4_000_000_000])
def test_wav_with_an_impossible_rate_is_a_4xx(rate: int) -> None:
    assert 400 <= refusal(wav(tone(1.0, RATE), rate)).status < 500


def test_wav_declaring_no_channels_is_a_4xx() -> None:
    assert 400 <= refusal(wav(tone(1.0, RATE), RATE, channels=0)).status < 500


def test_a_bomb_within_the_caps_is_stopped_by_the_worker_memory_limit() -> None:
    # 100 s of 192 kHz mono: within every cap, but 77 MB as floats (twice, joined up)
    # while the worker has ~60 MB to spare above what its libraries take.
    bomb = encoded(100.0, 192_000, "mono", silent=True)
    pool = DecodePool("test-decode", 1, DecodeLimits(280 * MIB, 30.0, 60.0), max_in_flight=1)
    try:
        with pytest.raises(DecodeError) as error:
            pool.call(decode_audio, bomb, 120.0)
        assert error.value.status == 413
        assert "memory" in error.value.message
        assert pool.call(decode_audio, encoded(1.0, RATE, "mono"), 120.0).duration == pytest.approx(1.0)
    finally:
        pool.close()
