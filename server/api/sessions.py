"""The session API: create, negotiate, stream speech, inspect, end."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from server.api.dependencies import ServerDep
from server.api.rate_limit import limit_creates, limit_uploads
from server.api.schemas import (
    BATCH_SIZE_RANGE,
    CHUNK_DURATION_RANGE,
    FPS_RANGE,
    ID_PATTERN,
    BusyResponse,
    ErrorResponse,
    IceCandidate,
    RateLimitedResponse,
    SessionCreated,
    SessionDescription,
    SessionEnded,
    SessionInfo,
    StreamAccepted,
)
from server.api.uploads import FILE_PROPERTY, multipart_body, read_upload
from server.core import AvatarServer
from server.media.audio_input import decode_audio
from server.sessions.session import Session, SessionParams

router = APIRouter(prefix="/webrtc/sessions", tags=["sessions"])

AUDIO_FIELD = "audio_file"

NOT_FOUND = {404: {"model": ErrorResponse, "description": "Unknown or expired session."}}
RATE_LIMITED = {429: {"model": RateLimitedResponse, "description": "Too many calls from this client."}}


def _session(server: AvatarServer, session_id: str) -> Session:
    return server.sessions.get(session_id)


def player_url(request: Request, server: AvatarServer, session_id: str) -> str:
    base = server.settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")
    return f"{base}/player/{session_id}"


@router.post(
    "/create",
    response_model=SessionCreated,
    dependencies=[Depends(limit_creates)],
    responses={
        **RATE_LIMITED,
        404: {"model": ErrorResponse, "description": "Unknown avatar."},
        503: {"model": ErrorResponse, "description": "The server is at its session limit."},
    },
)
async def create_session(
    request: Request,
    server: ServerDep,
    avatar_id: Annotated[str, Query(pattern=ID_PATTERN)] = "demo",
    user_id: Annotated[str | None, Query(max_length=128)] = None,
    fps: Annotated[int, Query(ge=FPS_RANGE[0], le=FPS_RANGE[1])] = 10,
    playback_fps: Annotated[int, Query(ge=FPS_RANGE[0], le=FPS_RANGE[1])] = 15,
    batch_size: Annotated[int, Query(ge=BATCH_SIZE_RANGE[0], le=BATCH_SIZE_RANGE[1])] = 2,
    chunk_duration: Annotated[
        float, Query(ge=CHUNK_DURATION_RANGE[0], le=CHUNK_DURATION_RANGE[1])
    ] = 2.0,
) -> SessionCreated:
    """Start a session; open `player_url`, or POST an offer, to receive its stream."""
    params = SessionParams(avatar_id, user_id, fps, playback_fps, batch_size, chunk_duration)
    session = await server.sessions.create(params)
    return SessionCreated(
        **asdict(params),
        session_id=session.id,
        player_url=player_url(request, server, session.id),
        ice_servers=server.settings.ice_servers(),
        engine=server.engine.name,
        idle_ttl_seconds=server.settings.session_idle_ttl_seconds,
    )


@router.post(
    "/{session_id}/offer",
    response_model=SessionDescription,
    responses={
        **NOT_FOUND,
        400: {"model": ErrorResponse, "description": "Unusable offer."},
        413: {"model": ErrorResponse, "description": "Offer larger than MAX_OFFER_BYTES."},
    },
)
async def offer(session_id: str, body: SessionDescription, server: ServerDep) -> SessionDescription:
    """Answer an SDP offer (recvonly audio and video); a new offer replaces the connection."""
    answer = await _session(server, session_id).answer(body.sdp, body.type)
    return SessionDescription(sdp=answer.sdp, type="answer")


@router.post(
    "/{session_id}/ice",
    status_code=204,
    responses={
        **NOT_FOUND,
        400: {"model": ErrorResponse, "description": "Malformed candidate."},
        409: {"model": ErrorResponse, "description": "No offer yet."},
    },
)
async def ice_candidate(session_id: str, body: IceCandidate, server: ServerDep) -> None:
    """Add one trickled ICE candidate; an empty `candidate` signals the end of them."""
    await _session(server, session_id).add_candidate(body.model_dump())


@router.post(
    "/{session_id}/stream",
    response_model=StreamAccepted,
    openapi_extra=multipart_body({AUDIO_FIELD: FILE_PROPERTY}, required=[AUDIO_FIELD]),
    dependencies=[Depends(limit_uploads)],
    responses={
        **NOT_FOUND,
        **RATE_LIMITED,
        400: {"model": ErrorResponse, "description": "Empty, corrupt or truncated audio."},
        409: {"model": BusyResponse, "description": "Still speaking, or no client connected."},
        413: {"model": ErrorResponse, "description": "Upload too large or audio too long."},
        415: {"model": ErrorResponse, "description": "Not audio, or not multipart."},
        422: {"model": ErrorResponse, "description": "No `audio_file` field."},
    },
)
async def stream(session_id: str, request: Request, server: ServerDep) -> StreamAccepted:
    """Make the avatar speak the uploaded audio (multipart field `audio_file`)."""
    session = _session(server, session_id)
    session.check_can_speak()  # refuse before reading a body that cannot be used
    settings = server.settings
    data, _ = await read_upload(request, AUDIO_FIELD, settings.max_upload_bytes)
    decoded = await asyncio.to_thread(decode_audio, data, settings.max_audio_seconds)
    utterance = session.speak(decoded.samples)
    return StreamAccepted(
        session_id=session.id,
        utterance_id=utterance.id,
        duration_seconds=round(utterance.duration, 3),
        frame_count=utterance.frame_count,
        chunk_count=len(utterance.chunks),
        source={
            "format": decoded.source_format,
            "codec": decoded.source_codec,
            "sample_rate": decoded.source_rate,
            "channels": decoded.source_channels,
        },
    )


@router.get("/{session_id}", response_model=SessionInfo, responses=NOT_FOUND)
async def get_session(session_id: str, server: ServerDep) -> SessionInfo:
    """The session's state and figures; also resets its idle timer."""
    info = _session(server, session_id).describe()
    return SessionInfo.model_validate({**info, "ice_servers": server.settings.ice_servers()})


@router.delete("/{session_id}", response_model=SessionEnded, responses=NOT_FOUND)
async def delete_session(session_id: str, server: ServerDep) -> SessionEnded:
    """End the session and free everything it holds."""
    await server.sessions.close(session_id, "deleted by the client")
    return SessionEnded(session_id=session_id)
