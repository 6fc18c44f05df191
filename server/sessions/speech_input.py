"""One streamed utterance being received: decoding, limits and backpressure.

Shared by the WebSocket and the chunked HTTP upload (server/api/speech_stream.py).
"""

from __future__ import annotations

import asyncio

import numpy as np

from server.media.clock import AUDIO_SAMPLE_RATE
from server.media.stream_input import (
    ENCODED_FORMATS,
    StreamFormat,
    StreamFormatError,
    make_stream_decoder,
)
from server.media.utterance import Utterance
from server.refusal import Refusal
from server.sessions.queue import Admission, SpeechMode
from server.sessions.session import Session
from server.settings import Settings

ROOM_POLL_SECONDS = 0.05


class StreamTooLongError(Refusal):
    status = 413


class IncomingSpeech:
    """A growing utterance of `session` fed with a client's bytes in `declared` format."""

    def __init__(
        self,
        session: Session,
        declared: StreamFormat,
        mode: SpeechMode,
        keep_queue: bool,
        settings: Settings,
        whole_messages: bool,
    ) -> None:
        if declared.format in ENCODED_FORMATS and not settings.stream_encoded_input:
            # Every decoder of untrusted media runs in the isolated workers (README,
            # "Isolation"); these stream decoders do not yet, so they are opt-in.
            raise StreamFormatError(
                f"Streamed {declared.format} is not enabled on this server "
                "(STREAM_ENCODED_INPUT): stream raw PCM (pcm_s16le or f32le), or upload "
                "the file to /stream."
            )
        self.session = session
        self.declared = declared
        self._settings = settings
        self._decoder = make_stream_decoder(declared, whole_messages)
        self.admission: Admission = session.speak_streamed(mode, keep_queue)
        self.utterance: Utterance = self.admission.utterance
        self._max_samples = round(settings.max_audio_seconds * AUDIO_SAMPLE_RATE)
        self.open = True
        """Until its client ended it (or it failed): its audio is still expected."""

    @property
    def active(self) -> bool:
        return self.utterance.active

    def feed(self, data: bytes) -> None:
        """Decode and append `data`; a refusal abandons the utterance. Audio of an
        utterance already cut (interrupted) is dropped."""
        if not self.active:
            return
        try:
            if len(data) > self._settings.stream_max_message_bytes:
                raise StreamTooLongError(
                    f"A message of {len(data)} bytes is larger than "
                    f"{self._settings.stream_max_message_bytes} (STREAM_MAX_MESSAGE_BYTES); "
                    "send smaller chunks."
                )
            self._append(self._decoder.feed(data))
        except Refusal as refusal:
            self.abandon(refusal.message)
            raise

    def end(self) -> None:
        """The client's end of utterance: the last samples, then complete."""
        self.open = False
        try:
            self._append(self._decoder.finish())
        except Refusal as refusal:
            self.abandon(refusal.message)
            raise
        self.session.stream_end(self.utterance)

    def abandon(self, reason: str) -> None:
        self.open = False
        self.session.stream_abandon(self.utterance, reason)

    def buffered_seconds(self) -> float:
        """Audio received and not yet played."""
        playout = self.session.playout
        played = playout.position() if playout.utterance is self.utterance else 0.0
        return max(0.0, self.utterance.received / AUDIO_SAMPLE_RATE - played)

    def has_room(self) -> bool:
        return self.buffered_seconds() < self._settings.stream_max_buffer_seconds

    async def wait_for_room(self) -> None:
        """Until the buffer ahead of playback is below STREAM_MAX_BUFFER_SECONDS."""
        while self.active and not self.has_room():
            await asyncio.sleep(ROOM_POLL_SECONDS)

    def _append(self, samples: np.ndarray) -> None:
        if self.utterance.received + len(samples) > self._max_samples:
            raise StreamTooLongError(
                f"The streamed speech is longer than {self._settings.max_audio_seconds:g} s "
                "(MAX_AUDIO_SECONDS); end the utterance and start another."
            )
        self.session.stream_append(self.utterance, samples)


__all__ = ["IncomingSpeech", "StreamFormatError", "StreamTooLongError"]
