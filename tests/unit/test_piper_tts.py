"""Piper voices from a folder: found by their two files, unavailable with a sentence
without them, and spoken by piper-tts (a tiny ONNX voice made by tests/piper_voices.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.tts.engine import TtsUnavailableError, UnknownVoiceError
from server.tts.piper import PiperTts, find_voices

pytest.importorskip("piper")
from tests.piper_voices import HOP, SAMPLE_RATE, write_tiny_voice  # noqa: E402

OUTPUT_PER_HOP = HOP * 48_000 // SAMPLE_RATE


def test_a_voice_is_a_model_with_its_config_beside_it(tmp_path: Path) -> None:
    write_tiny_voice(tmp_path, "alice")
    write_tiny_voice(tmp_path, "bob")
    (tmp_path / "bob.onnx.json").unlink()
    (tmp_path / "notes.json").write_text("{}")
    assert list(find_voices(tmp_path)) == ["alice"]


def test_without_voice_files_piper_is_unavailable_with_a_sentence(tmp_path: Path) -> None:
    tts = PiperTts(tmp_path / "tts", "", 10)
    reason = tts.unavailable_reason()
    assert reason is not None and str(tmp_path / "tts") in reason and ".onnx.json" in reason
    with pytest.raises(TtsUnavailableError) as refused:
        tts.check_available()
    assert refused.value.status == 503


def test_a_configured_voice_that_is_not_there_is_named(tmp_path: Path) -> None:
    write_tiny_voice(tmp_path, "alice")
    reason = PiperTts(tmp_path, "carol", 10).unavailable_reason()
    assert reason is not None and "carol" in reason


def test_the_default_voice_is_the_first_found_and_unknown_ones_are_422(tmp_path: Path) -> None:
    write_tiny_voice(tmp_path, "bob")
    write_tiny_voice(tmp_path, "alice")
    tts = PiperTts(tmp_path, "", 10)
    assert tts.unavailable_reason() is None
    assert tts.check_voice(None) == "alice"
    assert tts.check_voice("bob") == "bob"
    with pytest.raises(UnknownVoiceError) as refused:
        tts.check_voice("carol")
    assert "alice, bob" in refused.value.message


def test_a_voice_speaks_its_phonemes_at_48_khz(tmp_path: Path) -> None:
    write_tiny_voice(tmp_path)
    tts = PiperTts(tmp_path, "", 10)
    short = tts.synthesize_blocking("Hi.", "tiny")
    long = tts.synthesize_blocking("Hello there, how are you today?", "tiny")
    # One hop per phoneme id, resampled from the voice's 16 kHz to 48 kHz.
    assert len(short) % OUTPUT_PER_HOP == 0 and len(long) % OUTPUT_PER_HOP == 0
    assert len(long) > 3 * len(short) > 0
    assert short.dtype.name == "float32" and abs(long).max() <= 1.0
