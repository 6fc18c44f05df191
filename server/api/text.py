"""Text and chat: `POST /webrtc/sessions/{id}/say` and `POST /webrtc/sessions/{id}/chat`."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from fastapi import APIRouter, Depends

from server.api.access import ACCESS_RESPONSES, CONTROL
from server.api.dependencies import ServerDep
from server.api.openapi import RETRY_AFTER_HEADER, invalid_request
from server.api.rate_limit import limit_uploads
from server.api.schemas import (
    BusyResponse,
    RateLimitedResponse,
    ChatReply,
    ChatRequest,
    ChatSentence,
    CutUtterance,
    ErrorResponse,
    SayAccepted,
    SayRequest,
)
from server.chat.turn import ChatTurn
from server.refusal import Refusal
from server.sessions.queue import SpeechMode
from server.sessions.text_speech import speak_text, speak_text_streamed

router = APIRouter(
    prefix="/webrtc/sessions",
    tags=["text and chat"],
    # Speaking text costs what an upload costs: the same per-client rate limit.
    dependencies=[CONTROL, Depends(limit_uploads)],
    responses=ACCESS_RESPONSES,
)

COMMON = {
    429: {"model": RateLimitedResponse, "description": "Too many calls from this client."},
    400: {"model": ErrorResponse, "description": "A body that is not JSON."},
    404: {"model": ErrorResponse, "description": "Unknown or expired session."},
    409: {
        "model": BusyResponse,
        "description": "Still speaking (mode=reject), queue full, or no client connected.",
        "headers": RETRY_AFTER_HEADER,
    },
    **invalid_request("Empty or too long text, an unknown voice or mode, a malformed body."),
    413: {"model": ErrorResponse, "description": "The text's speech is longer than MAX_AUDIO_SECONDS."},
    503: {
        "model": BusyResponse,
        "description": "The TTS backend is unavailable or failed, or the server has not the "
        "capacity for this session's speech now (with `retry_after_seconds`).",
        "headers": RETRY_AFTER_HEADER,
    },
}


class ChatMessageError(Refusal):
    status = 422


@router.post("/{session_id}/say", operation_id="say", response_model=SayAccepted, responses=COMMON)
async def say(session_id: str, body: SayRequest, server: ServerDep) -> SayAccepted:
    """Make the avatar speak `text` (plain or SSML: tags are removed, never spoken),
    synthesised by the configured TTS backend, under the busy policy `mode`. With a
    streaming backend (TTS_ENGINE=openai, a pcm, mp3 or opus format) the avatar starts
    speaking before synthesis ends; the answer comes when it has ended."""
    session = server.sessions.get(session_id)
    mode = SpeechMode(body.mode)

    def capacity_turn() -> AbstractAsyncContextManager[None]:
        return server.admission.speech_turn(session, session.capacity_wait_event)

    turn = capacity_turn if body.wait else None
    if server.tts.stream_format is not None:  # spoken while it is synthesised
        spoken = await speak_text_streamed(
            session, server.tts, body.text, body.voice, mode, body.keep_queue,
            server.settings, server.audio_decoders, turn,
        )
    else:
        spoken = await speak_text(
            session, server.tts, body.text, body.voice, mode, body.keep_queue,
            server.settings.tts_max_chars, server.settings.max_audio_seconds, turn,
        )
    admission = spoken.admission
    utterance = admission.utterance
    return SayAccepted(
        session_id=session.id,
        utterance_id=utterance.id,
        duration_seconds=round(utterance.duration, 3),
        frame_count=utterance.frame_count,
        chunk_count=len(utterance.chunks),
        text=spoken.speech.text,
        voice=spoken.speech.voice,
        tts_engine=server.tts.name,
        mode=mode.value,
        queue_position=admission.position,
        interrupted=None if admission.cut is None else CutUtterance(**vars(admission.cut)),
        dropped_utterance_ids=admission.dropped,
    )


@router.post(
    "/{session_id}/chat",
    operation_id="chat",
    response_model=ChatReply,
    responses={
        **COMMON,
        409: {
            "model": BusyResponse,
            "description": "A chat turn is running, or as for /say.",
            "headers": RETRY_AFTER_HEADER,
        },
        502: {"model": ErrorResponse, "description": "The LLM failed or answered nonsense."},
        503: {
            "model": BusyResponse,
            "description": "No LLM configured; the TTS backend unavailable or failed; no "
            "capacity for this session's speech now (with `retry_after_seconds`).",
            "headers": RETRY_AFTER_HEADER,
        },
    },
)
async def chat(session_id: str, body: ChatRequest, server: ServerDep) -> ChatReply:
    """Send `message` to the LLM with the session's conversation; the avatar speaks the
    reply sentence by sentence as it streams in. Answers when the reply is complete."""
    session = server.sessions.get(session_id)
    settings = server.settings
    if len(body.message) > settings.chat_max_message_chars:
        raise ChatMessageError(
            f"The message is {len(body.message)} characters long; the limit is "
            f"{settings.chat_max_message_chars} (CHAT_MAX_MESSAGE_CHARS)."
        )
    if body.system_prompt is not None:
        if len(body.system_prompt) > settings.chat_max_message_chars:
            raise ChatMessageError(
                f"The system prompt is longer than {settings.chat_max_message_chars} characters "
                "(CHAT_MAX_MESSAGE_CHARS)."
            )
        session.conversation.system_prompt = body.system_prompt
    turn = ChatTurn(
        session, session.conversation, server.llm, server.tts, body.voice, SpeechMode(body.mode),
        settings.llm_max_reply_chars, settings.tts_max_chars, settings.max_audio_seconds,
    )
    result = await turn.run(body.message)
    return ChatReply(
        session_id=session.id,
        reply=result.reply,
        sentences=[ChatSentence(**vars(s)) for s in result.sentences],
        interrupted=result.interrupted,
        truncated=result.truncated,
        history_messages=len(session.conversation.history),
    )
