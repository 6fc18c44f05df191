"""One streamed utterance being received: decoding, limits and backpressure.

Shared by the WebSocket and the chunked HTTP upload (server/api/speech_stream.py) and by
text spoken through a streaming TTS (server/sessions/text_speech.py). Raw PCM is
converted here; MP3 and Ogg/Opus are decoded in an isolated decode worker of their own
(`DecodePool.open_fed`), started when the utterance is admitted.
"""

from __future__ import annotations

import asyncio

import numpy as np

from server.isolation.pool import DecodePool, FedStream
from server.media.clock import AUDIO_SAMPLE_RATE
from server.media.encoded_stream import open_encoded_stream
from server.media.stream_input import PCM_FORMATS, PcmStreamDecoder, StreamFormat, StreamFormatError
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
        decoders: DecodePool,
    ) -> None:
        self.session = session
        self.declared = declared
        self._settings = settings
        self.admission: Admission = session.speak_streamed(mode, keep_queue)
        self.utterance: Utterance = self.admission.utterance
        self._pcm: PcmStreamDecoder | None = None
        self._fed: asyncio.Future[FedStream] | None = None
        if declared.format in PCM_FORMATS:
            self._pcm = PcmStreamDecoder(declared, whole_messages)
        else:
            # Started now, while the first bytes are on their way; never cancelled (a
            # worker being started would be lost): `_release` closes it once it is there.
            self._fed = asyncio.ensure_future(decoders.open_fed(
                open_encoded_stream, declared.format, settings.max_audio_seconds
            ))
        self._max_samples = round(settings.max_audio_seconds * AUDIO_SAMPLE_RATE)
        self.open = True
        """Until its client ended it (or it failed): its audio is still expected."""

    @property
    def active(self) -> bool:
        return self.utterance.active

    async def feed(self, data: bytes) -> None:
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
            if self._pcm is not None:
                samples = self._pcm.feed(data)
            else:
                samples = await (await self._stream()).feed(data)
            self._append(samples)
        except Refusal as refusal:
            self.abandon(refusal.message)
            raise

    async def end(self) -> None:
        """The client's end of utterance: the last samples, then complete."""
        self.open = False
        try:
            if self._pcm is not None:
                samples = self._pcm.finish()
            else:
                samples = await (await self._stream()).finish()
            self._append(samples)
        except Refusal as refusal:
            self.abandon(refusal.message)
            raise
        finally:
            self._release()
        self.session.stream_end(self.utterance)

    def abandon(self, reason: str) -> None:
        self.open = False
        self._release()
        self.session.stream_abandon(self.utterance, reason)

    async def _stream(self) -> FedStream:
        assert self._fed is not None
        return await asyncio.shield(self._fed)

    def _release(self) -> None:
        """Close the decode worker, now or once it has started (idempotent)."""
        if self._fed is not None:
            self._fed.add_done_callback(_close_fed)


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


def _close_fed(started: asyncio.Future[FedStream]) -> None:
    if not started.cancelled() and started.exception() is None:
        started.result().close()


__all__ = ["IncomingSpeech", "StreamFormatError", "StreamTooLongError"]
