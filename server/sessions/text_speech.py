"""Text spoken by a session's avatar: checked, markup removed, synthesised, admitted."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from server.refusal import Refusal
from server.sessions.queue import Admission, SpeechMode
from server.sessions.session import Session
from server.tts.engine import Speech, TextToSpeech
from server.tts.ssml import speakable_text


class TextError(Refusal):
    status = 422


@dataclass(frozen=True)
class SpokenText:
    speech: Speech
    admission: Admission


def checked_text(text: str, max_chars: int) -> str:
    """What a backend is given for `text`; 422 when it is too long or says nothing."""
    if len(text) > max_chars:
        raise TextError(
            f"The text is {len(text)} characters long; the limit is {max_chars} (TTS_MAX_CHARS): "
            "send it in several requests (mode=queue plays them in order)."
        )
    spoken = speakable_text(text)
    if not any(c.isalnum() for c in spoken):
        raise TextError("The text has nothing to say (it is empty, or only markup and punctuation).")
    return spoken


async def speak_text(
    session: Session,
    tts: TextToSpeech,
    text: str,
    voice: str | None,
    mode: SpeechMode,
    keep_queue: bool,
    max_chars: int,
    max_seconds: float,
    capacity_turn: Callable[[], AbstractAsyncContextManager[None]] | None = None,
) -> SpokenText:
    """Synthesise `text` (off the event loop) and let `session` speak it under `mode`.

    Refuses with 422 (text, voice), 409 (busy, not connected) before synthesising, 413
    when its speech is longer than `max_seconds`, and 503 when the backend cannot speak
    or fails, or the server has not the capacity for it; with `capacity_turn`
    (`AdmissionControl.speech_turn`) it waits in line for the capacity instead.
    """
    spoken = checked_text(text, max_chars)
    chosen = tts.check_voice(voice)
    tts.check_available()
    session.check_can_speak(mode, wait_for_capacity=capacity_turn is not None)
    speech = await tts.synthesize(spoken, chosen)
    if speech.duration > max_seconds:
        raise TextError(
            f"The text takes {speech.duration:.1f} s to say; the limit is {max_seconds:g} s "
            "(MAX_AUDIO_SECONDS): send it in several requests.",
            413,
        )
    if capacity_turn is None:
        return SpokenText(speech, session.speak(speech.samples, mode, keep_queue))
    async with capacity_turn():
        return SpokenText(speech, session.speak(speech.samples, mode, keep_queue))
