"""Streamed speech in: `WS /webrtc/sessions/{id}/speech` and the chunked `POST` of the same.

The protocol (README, "Streaming speech in"): a `start` text message (or the format in
the query), binary messages of audio, `{"type": "end"}`; the server answers with JSON
text messages and, on an error, a `{"type": "error"}` message and close code
4000 + the HTTP status the same refusal gets over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, WebSocket, WebSocketDisconnect

from server.api.access import ACCESS_RESPONSES, CONTROL, require_api_key
from server.api.dependencies import ServerDep
from server.api.rate_limit import limit_uploads
from server.api.openapi import RETRY_AFTER_HEADER, invalid_request
from server.api.schemas import BusyResponse, ErrorResponse, RateLimitedResponse, StreamedSpeechResult
from server.core import AvatarServer
from server.media.stream_input import StreamFormat
from server.refusal import Refusal
from server.sessions.queue import SpeechMode
from server.sessions.session import Session
from server.sessions.speech_input import IncomingSpeech

router = APIRouter(prefix="/webrtc/sessions", tags=["streamed speech"])

CLOSE_NORMAL = 1000
CLOSE_CODE_BASE = 4000
"""A refusal closes the socket with 4000 + its HTTP status (4409 busy, 4422 bad input)."""
# Events of the session relayed to the client streaming an utterance, about that one.
RELAYED_EVENTS = (
    "speaking_started", "speaking_ended", "utterance_interrupted", "utterance_cancelled",
    "utterance_dropped", "input_underrun", "input_resumed", "error",
)
RELAY_POLL_SECONDS = 0.5


class ProtocolError(Refusal):
    status = 422


class IdleStreamError(Refusal):
    status = 408


def _mode(value: Any) -> SpeechMode:
    try:
        return SpeechMode(value if value is not None else SpeechMode.REJECT.value)
    except ValueError:
        raise ProtocolError(
            f"Unknown mode {value!r}; use reject, queue or interrupt."
        ) from None


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("1", "true", "yes", "on")


def _accepted(incoming: IncomingSpeech) -> dict[str, Any]:
    admission = incoming.admission
    return {
        "type": "accepted",
        "utterance_id": admission.utterance.id,
        "queue_position": admission.position,
        "interrupted": None if admission.cut is None else vars(admission.cut),
        "dropped_utterance_ids": admission.dropped,
        **incoming.declared.describe(),
    }


class SpeechSocket:
    """One client's WebSocket: utterances one after another, each start .. end."""

    def __init__(self, websocket: WebSocket, server: AvatarServer, session: Session) -> None:
        self.ws = websocket
        self.server = server
        self.session = session
        self.settings = server.settings
        self.incoming: IncomingSpeech | None = None
        self._mine: set[str] = set()
        self._paused = False

    async def run(self, query: dict[str, Any]) -> None:
        relay = asyncio.ensure_future(self._relay())
        try:
            if query.get("format") is not None:
                await self._start(query)
            while True:
                await self._receive_one(query)
        except WebSocketDisconnect:
            if self.incoming is not None and self.incoming.open:
                # The client went away: what arrived is the utterance.
                with contextlib.suppress(Refusal):
                    await self.incoming.end()
        except Refusal as refusal:
            if self.incoming is not None and self.incoming.open:
                self.incoming.abandon(refusal.message)
            await self._refuse(refusal)
        finally:
            if self.incoming is not None and self.incoming.open:
                self.incoming.abandon("the stream failed")  # frees its decode worker
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay

    async def _receive_one(self, query: dict[str, Any]) -> None:
        incoming = self.incoming
        receiving = incoming is not None and incoming.open
        if receiving and incoming is not None and incoming.active and not incoming.has_room():
            await self._send({"type": "pause", "buffered_seconds": round(incoming.buffered_seconds(), 3)})
            await incoming.wait_for_room()
            await self._send({"type": "resume", "buffered_seconds": round(incoming.buffered_seconds(), 3)})
        try:
            message = await asyncio.wait_for(
                self.ws.receive(), self.settings.stream_idle_timeout_seconds if receiving else None
            )
        except TimeoutError:
            if incoming is not None:
                await incoming.end()
            raise IdleStreamError(
                f"No audio for {self.settings.stream_idle_timeout_seconds:g} s "
                "(STREAM_IDLE_TIMEOUT_SECONDS): the utterance ended with what arrived."
            ) from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", CLOSE_NORMAL))
        data = message.get("bytes")
        if data is not None:
            if incoming is None or not incoming.open:
                raise ProtocolError(
                    "Audio arrived before a start message: send {\"type\": \"start\", "
                    "\"format\": ...} first (or declare format in the query)."
                )
            await incoming.feed(data)
            return
        text = message.get("text") or ""
        try:
            parsed = json.loads(text)
        except ValueError:
            raise ProtocolError("Text messages must be JSON objects with a 'type'.") from None
        kind = parsed.get("type") if isinstance(parsed, dict) else None
        if kind == "start":
            if receiving and incoming is not None and incoming.active:
                raise ProtocolError("An utterance is still open: send {\"type\": \"end\"} first.")
            if incoming is not None and incoming.open:
                incoming.abandon("a new start")  # it was cut; its end need not be sent
            await self._start({**query, **parsed})
        elif kind == "end":
            if not receiving or incoming is None:
                raise ProtocolError("No utterance is open: send a start message first.")
            await incoming.end()
            await self._send({
                "type": "complete",
                "utterance_id": incoming.utterance.id,
                "duration_seconds": round(incoming.utterance.duration, 3),
                "state": incoming.utterance.state.value,
            })
        else:
            raise ProtocolError(f"Unknown message type {kind!r}; send start, end or binary audio.")

    async def _start(self, fields: dict[str, Any]) -> None:
        declared = StreamFormat.parse(fields.get("format"), fields.get("sample_rate"), fields.get("channels"))
        mode = _mode(fields.get("mode"))
        await self.session.connection_settled()
        incoming = IncomingSpeech(
            self.session, declared, mode, _flag(fields.get("keep_queue", False)), self.settings,
            whole_messages=True, decoders=self.server.audio_decoders,
        )
        self.incoming = incoming
        self._mine.add(incoming.utterance.id)
        await self._send(_accepted(incoming))

    async def _relay(self) -> None:
        async with self.session.events.listen() as listener:
            while True:
                event = await listener.next()
                if event is None:
                    return
                if event.type in RELAYED_EVENTS and event.fields.get("utterance_id") in self._mine:
                    message = event.message()
                    message.pop("session_id", None)
                    await self._send(message)

    async def _send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # the client may be gone
            await self.ws.send_text(json.dumps(message))

    async def _refuse(self, refusal: Refusal) -> None:
        await refuse_socket(self.ws, refusal)


async def refuse_socket(websocket: WebSocket, refusal: Refusal) -> None:
    """Tell the client why in an `error` message, then close with 4000 + the status."""
    message = {"type": "error", "status": refusal.status, "detail": refusal.message, **refusal.extra}
    with contextlib.suppress(Exception):  # the client may be gone
        await websocket.send_text(json.dumps(message))
        await websocket.close(CLOSE_CODE_BASE + refusal.status, refusal.message[:120])


@router.websocket("/{session_id}/speech", dependencies=[Depends(require_api_key)])
async def speech_socket(websocket: WebSocket, session_id: str) -> None:
    """Stream speech audio as it is produced (README, "Streaming speech in")."""
    server: AvatarServer = websocket.app.state.server
    await websocket.accept()
    try:
        session = server.sessions.get(session_id)
    except Refusal as refusal:
        await refuse_socket(websocket, refusal)
        return
    await SpeechSocket(websocket, server, session).run(dict(websocket.query_params))


@router.post(
    "/{session_id}/speech",
    operation_id="stream_speech",
    dependencies=[CONTROL, Depends(limit_uploads)],
    response_model=StreamedSpeechResult,
    responses={
        **ACCESS_RESPONSES,
        404: {"model": ErrorResponse, "description": "Unknown or expired session."},
        409: {
            "model": BusyResponse,
            "description": "Still speaking (mode=reject), queue full, or no client connected.",
            "headers": RETRY_AFTER_HEADER,
        },
        400: {"model": ErrorResponse, "description": "An MP3 or Ogg/Opus stream made its decoder crash."},
        413: {
            "model": ErrorResponse,
            "description": "Longer than MAX_AUDIO_SECONDS, or past its decode worker's limit.",
        },
        429: {"model": RateLimitedResponse, "description": "Too many uploads from this client."},
        503: {
            "model": BusyResponse,
            "description": "The server has not the capacity for this session's speech now, "
            "every decode slot is taken (MP3, Ogg/Opus; with `retry_after_seconds`), "
            "or the server is shutting down.",
            "headers": RETRY_AFTER_HEADER,
        },
        **invalid_request("An undeclared or unsupported format, rate or channel count; a body "
                          "that ends inside a sample; an undecodable or truncated MP3/Ogg stream."),
    },
    openapi_extra={
        "requestBody": {
            "description": "Raw audio in the declared format, sent as it is produced "
            "(chunked transfer encoding).",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def stream_speech(
    session_id: str,
    request: Request,
    server: ServerDep,
    format: Annotated[str | None, Query(description="pcm_s16le, f32le, mp3 or ogg_opus")] = None,
    sample_rate: Annotated[int | None, Query(description="For raw PCM: 16000, 22050, 24000, 44100, 48000")] = None,
    channels: Annotated[int | None, Query(description="For raw PCM: 1 or 2")] = None,
    mode: Annotated[SpeechMode, Query()] = SpeechMode.REJECT,
    keep_queue: Annotated[bool, Query()] = False,
) -> StreamedSpeechResult:
    """Speak audio streamed in the request body: speech starts once its first frames are
    rendered, before the body ends; the answer comes when the body has ended."""
    session = server.sessions.get(session_id)
    declared = StreamFormat.parse(format, sample_rate, channels)
    await session.connection_settled()
    incoming = IncomingSpeech(
        session, declared, mode, keep_queue, server.settings, whole_messages=False,
        decoders=server.audio_decoders,
    )
    try:
        async for block in request.stream():
            if not incoming.active:
                break
            await incoming.wait_for_room()  # backpressure: the body is read no faster
            await incoming.feed(block)
        await incoming.end()
    except Refusal:
        raise
    except BaseException:
        incoming.abandon("the upload failed")
        raise
    admission = incoming.admission
    utterance = admission.utterance
    return StreamedSpeechResult(
        session_id=session.id,
        utterance_id=utterance.id,
        duration_seconds=round(utterance.duration, 3),
        mode=mode.value,
        queue_position=admission.position,
        state=utterance.state.value,
        **declared.describe(),
    )
