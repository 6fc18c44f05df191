"""Text spoken by a session's avatar: checked, markup removed, synthesised, admitted."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from server.isolation.pool import DecodePool
from server.refusal import Refusal
from server.sessions.queue import Admission, SpeechMode
from server.sessions.session import Session
from server.sessions.speech_input import IncomingSpeech
from server.settings import Settings
from server.tts.engine import Speech, TextToSpeech, TtsFailedError
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
    await session.connection_settled()
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


async def speak_text_streamed(
    session: Session,
    tts: TextToSpeech,
    text: str,
    voice: str | None,
    mode: SpeechMode,
    keep_queue: bool,
    settings: Settings,
    decoders: DecodePool,
    capacity_turn: Callable[[], AbstractAsyncContextManager[None]] | None = None,
) -> SpokenText:
    """As `speak_text`, for a backend with a `stream_format`: its audio is streamed
    speech, spoken while it is synthesised; this returns once synthesis has ended.

    The utterance is admitted once the backend has answered (a failure before that
    leaves the session as it was); one that fails or runs past MAX_AUDIO_SECONDS later
    is dropped where it is (503, 413). With `capacity_turn`, it waits for the server's
    capacity (as `speak_text`) once the backend has answered.
    """
    assert tts.stream_format is not None
    spoken = checked_text(text, settings.tts_max_chars)
    chosen = tts.check_voice(voice)
    tts.check_available()
    await session.connection_settled()
    session.check_can_speak(mode, wait_for_capacity=capacity_turn is not None)
    async with tts.open_stream(spoken, chosen) as pieces:
        def admitted() -> IncomingSpeech:
            return IncomingSpeech(
                session, tts.stream_format, mode, keep_queue, settings, whole_messages=False,
                decoders=decoders,
            )

        if capacity_turn is None:
            incoming = admitted()
        else:
            async with capacity_turn():
                incoming = admitted()
        try:
            async for piece in pieces:
                if not incoming.active:
                    break  # cut (interrupted): the rest is not needed
                await incoming.wait_for_room()
                await incoming.feed(piece)
            if incoming.utterance.received == 0 and incoming.active:
                raise TtsFailedError(f"The {tts.name} speech synthesis returned no audio for this text.")
            await incoming.end()
        except BaseException:
            if incoming.open:
                incoming.abandon("the speech synthesis failed")
            raise
    utterance = incoming.utterance
    return SpokenText(Speech(utterance.samples, chosen, spoken), incoming.admission)
