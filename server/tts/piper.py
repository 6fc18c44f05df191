"""Piper voices (`piper-tts`): `<voice>.onnx` + `<voice>.onnx.json` files in a folder.

The operator puts the voice files in `models/tts/` (TTS_VOICES_DIR); each pair found
there is a voice named after its file. A voice is loaded on first use and kept.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np

from server.tts.audio import to_output_rate
from server.tts.engine import TextToSpeech, TtsFailedError, TtsUnavailableError

MODEL_SUFFIX = ".onnx"
CONFIG_SUFFIX = ".onnx.json"


def find_voices(folder: Path) -> dict[str, Path]:
    """The voices in `folder`: name → model file, for each model with its config beside it."""
    if not folder.is_dir():
        return {}
    return {
        model.name[: -len(MODEL_SUFFIX)]: model
        for model in sorted(folder.glob(f"*{MODEL_SUFFIX}"))
        if model.is_file() and model.with_name(model.name + ".json").is_file()
    }


class PiperTts(TextToSpeech):
    """Piper's neural voices on the CPU (onnxruntime), from the voice files in `folder`."""

    name = "piper"

    def __init__(self, folder: Path, voice: str, timeout_seconds: float) -> None:
        self.folder = folder
        self._voice = voice
        self.timeout_seconds = timeout_seconds
        self._loaded: dict[str, Any] = {}
        # piper phonemizes with one process-wide espeak-ng instance: one synthesis at a time.
        self._lock = threading.Lock()

    def unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("piper") is None:
            return (
                "TTS_ENGINE=piper needs the piper-tts package: pip install piper-tts "
                "in the server's environment."
            )
        if not find_voices(self.folder):
            return (
                f"No Piper voice in {self.folder}: put a voice's <name>.onnx and "
                "<name>.onnx.json files there, or choose another TTS_ENGINE."
            )
        if self._voice and self._voice not in find_voices(self.folder):
            return f"TTS_VOICE={self._voice!r} is not a Piper voice in {self.folder}."
        return None

    def default_voice(self) -> str:
        return self._voice or next(iter(find_voices(self.folder)), "")

    def voices(self) -> list[str]:
        return list(find_voices(self.folder))

    def synthesize_blocking(self, text: str, voice: str) -> np.ndarray:
        with self._lock:
            model = self._load(voice)
            try:
                chunks = list(model.synthesize(text))
            except Exception as error:  # onnxruntime and the phonemizer raise assorted errors
                raise TtsFailedError(f"The Piper voice {voice!r} failed: {error}.") from None
        if not chunks:
            return np.zeros(0, np.float32)
        audio = np.concatenate([c.audio_float_array for c in chunks])
        return to_output_rate(audio, chunks[0].sample_rate)

    def _load(self, voice: str) -> Any:
        if voice not in self._loaded:
            model_path = find_voices(self.folder).get(voice)
            if model_path is None:
                raise TtsUnavailableError(f"The Piper voice {voice!r} is no longer in {self.folder}.")
            from piper import PiperVoice

            try:
                self._loaded[voice] = PiperVoice.load(model_path)
            except Exception as error:
                raise TtsFailedError(
                    f"The Piper voice {voice!r} could not be loaded ({error}); check its files."
                ) from None
        return self._loaded[voice]
