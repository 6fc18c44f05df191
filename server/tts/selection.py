"""The TTS backend the settings name (TTS_ENGINE)."""

from __future__ import annotations

from server.settings import Settings
from server.tts.engine import TextToSpeech
from server.tts.espeak import EspeakTts
from server.tts.openai import OpenAiSpeechTts
from server.tts.piper import PiperTts

ENGINES = ("espeak", "piper", "openai")


def build_tts(settings: Settings) -> TextToSpeech:
    """The configured backend; one that cannot run says why in `unavailable_reason()`."""
    timeout = settings.tts_timeout_seconds
    if settings.tts_engine == "piper":
        return PiperTts(settings.tts_voices_path, settings.tts_voice, timeout)
    if settings.tts_engine == "openai":
        return OpenAiSpeechTts(
            settings.tts_openai_url,
            settings.tts_openai_key,
            settings.tts_openai_model,
            settings.tts_voice,
            settings.tts_openai_format,
            timeout,
            settings.max_audio_seconds,
        )
    return EspeakTts(settings.tts_voice, timeout)
