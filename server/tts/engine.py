"""The text-to-speech interface every backend implements, and its refusals."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import numpy as np

from server.media.audio_input import SAMPLE_RATE
from server.media.stream_input import StreamFormat
from server.refusal import Refusal

# Added to a backend's own timeout for the thread that waits on it (the backend enforces
# its timeout itself: it kills its process or closes its connection).
THREAD_TIMEOUT_SLACK_SECONDS = 5.0


class TtsUnavailableError(Refusal):
    """The backend cannot synthesise at all (not installed, no voices, not configured)."""

    status = 503


class TtsFailedError(Refusal):
    """The backend failed on this text (it crashed, timed out, or answered nonsense)."""

    status = 503


class UnknownVoiceError(Refusal):
    status = 422


@dataclass(frozen=True)
class Speech:
    """Synthesised speech: float32 mono at `SAMPLE_RATE`, in [-1, 1]."""

    samples: np.ndarray
    voice: str
    text: str
    """What the backend was given (markup removed)."""

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


class TextToSpeech(abc.ABC):
    """One backend. `synthesize` blocks (a thread runs it); the rest is cheap."""

    name: str
    timeout_seconds: float
    stream_format: StreamFormat | None = None
    """Set by a backend that can hand its audio on as it is synthesised (`open_stream`):
    the format of the pieces, spoken as streamed speech."""

    @abc.abstractmethod
    def unavailable_reason(self) -> str | None:
        """None when it can synthesise; else a sentence saying why not and what to do."""

    @abc.abstractmethod
    def default_voice(self) -> str:
        """The voice used when a request names none."""

    @abc.abstractmethod
    def voices(self) -> list[str]:
        """The voices a request may name (empty when any name is passed on, as-is)."""

    @abc.abstractmethod
    def synthesize_blocking(self, text: str, voice: str) -> np.ndarray:
        """float32 mono 48 kHz audio of plain `text` in `voice`; raises TtsFailedError."""

    def open_stream(self, text: str, voice: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """`text` spoken in `voice`, as pieces of audio in `stream_format` while they are
        synthesised (for the backends that set it)."""
        raise NotImplementedError(f"the {self.name} backend does not stream")

    def check_voice(self, voice: str | None) -> str:
        """The voice to use for a request naming `voice`; UnknownVoiceError (422) if none."""
        if voice is None or voice == "":
            return self.default_voice()
        known = self.voices()
        if known and voice not in known:
            shown = ", ".join(known[:20]) + (" …" if len(known) > 20 else "")
            raise UnknownVoiceError(f"Unknown {self.name} voice {voice!r}; available: {shown}.")
        return voice

    def check_available(self) -> None:
        reason = self.unavailable_reason()
        if reason is not None:
            raise TtsUnavailableError(reason)

    async def synthesize(self, text: str, voice: str) -> Speech:
        """`text` (markup already removed) spoken in `voice`, synthesised in a thread."""
        self.check_available()
        try:
            samples = await asyncio.wait_for(
                asyncio.to_thread(self.synthesize_blocking, text, voice),
                self.timeout_seconds + THREAD_TIMEOUT_SLACK_SECONDS,
            )
        except TimeoutError:
            raise TtsFailedError(
                f"The {self.name} speech synthesis took longer than {self.timeout_seconds:g} s."
            ) from None
        if len(samples) == 0:
            raise TtsFailedError(f"The {self.name} speech synthesis returned no audio for this text.")
        return Speech(samples, voice, text)
