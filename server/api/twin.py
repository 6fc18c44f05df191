"""TWIN's stream package: `/v1/stream-package/<call>`, every call a JSON POST (README,
"Coming from TWIN").

TWIN's API is D-ID-shaped, and so is this one: the same streams (server/vendors/streams.py),
the same JanusDataChannel events, D-ID's error shape `{"kind", "description"}`.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from server.api.access import CONTROL
from server.api.dependencies import ServerDep
from server.api.did import COMMON, CREATE, NEGOTIATE, TALK, DidRoute, StreamsDep
from server.api.rate_limit import limit_creates, limit_uploads
from server.api.vendor_schemas import (
    DidError,
    JsepOffer,
    TwinCreated,
    TwinLlmStarted,
    TwinNetworkInfo,
    TwinOk,
    TwinSetup,
    TwinSetupDone,
    TwinSpeak,
    TwinStart,
    TwinStarted,
    TwinStreamRef,
)
from server.avatars.errors import AvatarNotFoundError
from server.sessions.queue import SpeechMode
from server.vendors import streams as vendor

SURFACE = "twin"

router = APIRouter(
    prefix="/v1/stream-package", tags=["TWIN"], dependencies=[CONTROL], route_class=DidRoute
)

LLM = {
    **TALK,
    409: {"model": DidError, "description": "A chat turn is running, or as for startStream."},
    502: {"model": DidError, "description": "The LLM failed or answered nonsense."},
    503: {"model": DidError, "description": "No LLM configured (LLM_URL), or the TTS unavailable."},
}


@router.post(
    "/setupConnection", operation_id="twin_setup_connection", response_model=TwinSetupDone,
    dependencies=[Depends(limit_creates)], responses=CREATE,
)
async def setup_connection(body: TwinSetup, server: ServerDep, streams: StreamsDep) -> TwinSetupDone:
    """A stream for the avatar `twinId` (VENDOR_DEFAULT_AVATAR without one) and the
    server's SDP offer; `responseResolution` (a height: 720, "720p", "1280x720") scales the
    video to that height, the width in the avatar's proportions."""
    avatar = body.twinId or server.settings.vendor_default_avatar
    if not server.avatars.exists(avatar):
        raise AvatarNotFoundError(avatar, server.avatars.available())
    height = vendor.output_height(body.responseResolution)
    created = await streams.create(server, avatar, SURFACE, height)
    return TwinSetupDone(
        id=created.stream.stream_id,
        session_id=created.stream.session_id,
        offer=JsepOffer(sdp=created.offer.sdp),
        ice_servers=created.ice_servers,
    )


@router.post(
    "/startConnection", operation_id="twin_start_connection", response_model=TwinCreated,
    responses=NEGOTIATE,
)
async def start_connection(body: TwinStart, server: ServerDep, streams: StreamsDep) -> TwinCreated:
    """The client's SDP answer; candidates sent before it apply now."""
    stream, session = streams.get(server, body.streamId, body.sessionId, SURFACE)
    await vendor.answer(session, body.answer.sdp, body.answer.type)
    return TwinCreated(session_id=stream.session_id)


@router.post(
    "/sendNetworkInfo", operation_id="twin_send_network_info", response_model=TwinCreated,
    responses=NEGOTIATE,
)
async def send_network_info(
    body: TwinNetworkInfo, server: ServerDep, streams: StreamsDep
) -> TwinCreated:
    """A trickled ICE candidate; none means gathering is complete."""
    stream, session = streams.get(server, body.streamId, body.sessionId, SURFACE)
    await vendor.add_candidate(session, body.candidate, body.sdpMid, body.sdpMLineIndex)
    return TwinCreated(session_id=stream.session_id)


@router.post(
    "/startStream", operation_id="twin_start_stream", response_model=TwinStarted,
    dependencies=[Depends(limit_uploads)], responses=TALK,
)
async def start_stream(body: TwinSpeak, server: ServerDep, streams: StreamsDep) -> TwinStarted:
    """Say `input` (text; SSML tags removed) through the TTS, queued behind what plays."""
    stream, session = streams.get(server, body.streamId, body.sessionId, SURFACE)
    spoken = await vendor.say_text(server, session, body.input, body.voiceId, SpeechMode.QUEUE)
    return TwinStarted(
        video_id=spoken.video_id, duration=spoken.duration_seconds, session_id=stream.session_id
    )


@router.post(
    "/startLlmStream", operation_id="twin_start_llm_stream", response_model=TwinLlmStarted,
    dependencies=[Depends(limit_uploads)], responses=LLM,
)
async def start_llm_stream(
    body: TwinSpeak, server: ServerDep, streams: StreamsDep
) -> TwinLlmStarted:
    """Send `input` to the LLM (the session's conversation, as POST …/chat); the avatar
    says the reply sentence by sentence as it streams in. Answers when it is complete."""
    stream, session = streams.get(server, body.streamId, body.sessionId, SURFACE)
    result = await vendor.chat_turn(server, session, body.input, SpeechMode.QUEUE)
    return TwinLlmStarted(
        session_id=stream.session_id,
        reply=result.reply,
        video_ids=[s.utterance_id for s in result.sentences],
        interrupted=result.interrupted,
    )


@router.post(
    "/pingStream", operation_id="twin_ping_stream", response_model=TwinOk, responses=COMMON,
)
async def ping_stream(body: TwinStreamRef, server: ServerDep, streams: StreamsDep) -> TwinOk:
    """Keep the stream alive: its idle timeout (SESSION_IDLE_TTL_SECONDS) starts again."""
    stream, session = streams.get(server, body.streamId, body.sessionId, SURFACE)
    session.touch()
    return TwinOk(status="ok", session_id=stream.session_id)


@router.post(
    "/deleteStream", operation_id="twin_delete_stream", response_model=TwinOk, responses=COMMON,
)
async def delete_stream(body: TwinStreamRef, server: ServerDep, streams: StreamsDep) -> TwinOk:
    """End the stream and its session."""
    stream, _ = streams.get(server, body.streamId, body.sessionId, SURFACE)
    await streams.delete(server, stream)
    return TwinOk(status="deleted", session_id=stream.session_id)
