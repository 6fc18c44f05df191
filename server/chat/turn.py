"""One chat turn: the user's message to the LLM, its reply spoken sentence by sentence.

The reply streams in; each sentence is synthesised and queued on the session as soon as
it is complete (the first in the turn's `mode`, the rest with `queue`), while the rest
of the reply is still arriving. Every piece of text is published as a `chat_delta`
event, the whole reply as `chat_reply` at the end (`chat_error` when the turn fails).
When one of the turn's utterances is interrupted or dropped (barge-in), or a new turn in
mode `interrupt` comes, the turn stops: the LLM stream is closed, nothing more is
spoken, and what arrived is the reply.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field

from server.chat.conversation import Conversation
from server.chat.llm import ChatCompletions, LlmError
from server.chat.sentences import DEFAULT_MAX_CHARS, SentenceSplitter
from server.refusal import Refusal
from server.sessions.events import EventListener
from server.sessions.queue import QueueFullError, SpeechMode
from server.sessions.session import Session
from server.sessions.text_speech import SpokenText, speak_text
from server.tts.engine import TextToSpeech
from server.tts.ssml import speakable_text

logger = logging.getLogger(__name__)

# Events that end an utterance of the turn before it was heard in full.
STOPPING_EVENTS = ("utterance_interrupted", "utterance_dropped", "utterance_cancelled")
QUEUE_FULL_RETRY_SECONDS = 0.1
# Markdown a model may send despite the prompt: emphasis, headings, code marks.
_MARKDOWN = re.compile(r"[*`]+|^#+\s*", re.MULTILINE)


class ChatBusyError(Refusal):
    status = 409


class ChatReplyError(LlmError):
    pass


@dataclass(frozen=True)
class SpokenSentence:
    text: str
    utterance_id: str
    duration_seconds: float
    queue_position: int


@dataclass
class TurnResult:
    reply: str
    sentences: list[SpokenSentence] = field(default_factory=list)
    interrupted: bool = False
    truncated: bool = False


@dataclass
class ChatTurn:
    session: Session
    conversation: Conversation
    llm: ChatCompletions
    tts: TextToSpeech
    voice: str | None
    mode: SpeechMode
    max_reply_chars: int
    max_sentence_chars: int
    max_sentence_seconds: float
    _stopped: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _tasks: tuple[asyncio.Task[None], ...] = field(default=(), init=False)

    async def run(self, message: str) -> TurnResult:
        """Run the turn; raises LlmError (502/503), TtsFailedError (503), or a 409.

        While another turn of the session runs, a turn in mode `interrupt` stops it (as a
        barge-in would) and starts once it has ended; in another mode it is refused.
        """
        conversation = self.conversation
        if conversation.turn_lock.locked():
            running = conversation.running
            if self.mode is not SpeechMode.INTERRUPT or not isinstance(running, ChatTurn):
                raise ChatBusyError(
                    "A chat turn is still running in this session: wait for its answer, "
                    "send this one with mode=interrupt to cut it, or POST /interrupt."
                )
            running.stop("a new chat turn with mode=interrupt")
        async with conversation.turn_lock:
            self.llm.check_available()
            self.tts.check_voice(self.voice)
            self.tts.check_available()
            await self.session.connection_settled()
            self.session.check_can_speak(self.mode)
            conversation.running = self
            try:
                return await self._run(message)
            finally:
                conversation.running = None

    def stop(self, why: str) -> None:
        """End the turn now: nothing more is read or spoken; it answers what it has."""
        if not self._stopped.is_set():
            logger.info("session %s: chat turn stopped (%s)", self.session.id, why)
        self._stopped.set()
        for task in self._tasks:
            task.cancel()

    async def _run(self, message: str) -> TurnResult:
        events = self.session.events
        result = TurnResult("")
        mine: set[str] = set()
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        async with events.listen() as listener:
            reader = asyncio.create_task(self._read_reply(message, result, sentences))
            speaker = asyncio.create_task(self._speak_all(sentences, result, mine))
            speaker.add_done_callback(lambda task: _stop_reading_if_failed(task, reader))
            self._tasks = (reader, speaker)
            if self._stopped.is_set():
                self.stop("stopped before it began")
            watcher = asyncio.create_task(self._watch(listener, mine))
            try:
                for task in (reader, speaker):
                    try:
                        await task
                    except asyncio.CancelledError:
                        if _being_cancelled():
                            raise
            except BaseException as error:
                for task in (reader, speaker):
                    task.cancel()
                await asyncio.gather(reader, speaker, return_exceptions=True)
                if isinstance(error, Refusal):
                    events.publish("chat_error", detail=error.message, status=error.status)
                raise
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
        result.interrupted = self._stopped.is_set()
        self.conversation.add_turn(message, result.reply)
        events.publish(
            "chat_reply",
            text=result.reply,
            utterance_ids=[s.utterance_id for s in result.sentences],
            interrupted=result.interrupted,
        )
        return result

    async def _read_reply(
        self, message: str, result: TurnResult, sentences: asyncio.Queue[str | None]
    ) -> None:
        splitter = SentenceSplitter(min(DEFAULT_MAX_CHARS, self.max_sentence_chars))
        stream = self.llm.stream(self.conversation.request(message))
        try:
            async for piece in stream:
                room = self.max_reply_chars - len(result.reply)
                if len(piece) >= room:
                    piece, result.truncated = piece[:room], True
                result.reply += piece
                self.session.events.publish("chat_delta", text=piece)
                for sentence in splitter.feed(piece):
                    sentences.put_nowait(sentence)
                if result.truncated:
                    logger.info("session %s: reply cut at LLM_MAX_REPLY_CHARS", self.session.id)
                    break
        finally:
            await stream.aclose()
        for sentence in splitter.flush():
            sentences.put_nowait(sentence)
        sentences.put_nowait(None)
        if not result.reply.strip():
            raise ChatReplyError("The LLM's reply was empty.")

    async def _speak_all(
        self,
        sentences: asyncio.Queue[str | None],
        result: TurnResult,
        mine: set[str],
    ) -> None:
        mode = self.mode
        while (sentence := await sentences.get()) is not None:
            text = _MARKDOWN.sub("", sentence)
            if not any(c.isalnum() for c in speakable_text(text)):
                continue
            spoken = await self._speak(text, mode)
            utterance = spoken.admission.utterance
            mine.add(utterance.id)
            result.sentences.append(
                SpokenSentence(
                    text, utterance.id, round(utterance.duration, 3), spoken.admission.position
                )
            )
            mode = SpeechMode.QUEUE

    async def _speak(self, text: str, mode: SpeechMode) -> SpokenText:
        while True:
            try:
                return await speak_text(
                    self.session, self.tts, text, self.voice, mode, False,
                    self.max_sentence_chars, self.max_sentence_seconds,
                )
            except QueueFullError:
                # A long reply: wait for a place rather than fail the turn.
                await asyncio.sleep(QUEUE_FULL_RETRY_SECONDS)

    async def _watch(self, listener: EventListener, mine: set[str]) -> None:
        while (event := await listener.next()) is not None:
            if event.type in STOPPING_EVENTS and event.fields.get("utterance_id") in mine:
                self.stop(event.type)
                return


def _stop_reading_if_failed(speaker: asyncio.Task[None], reader: asyncio.Task[None]) -> None:
    """A failed synthesis ends the turn: the rest of the reply is not read."""
    if not speaker.cancelled() and speaker.exception() is not None:
        reader.cancel()


def _being_cancelled() -> bool:
    """Whether the running task itself is being cancelled (not one it awaited)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
