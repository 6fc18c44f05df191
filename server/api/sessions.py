"""The session API: create, negotiate, stream speech, inspect, end."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from server.api.access import (
    ACCESS_RESPONSES,
    CONTROL,
    SESSION_TOKEN_QUERY,
    SIGNALLING,
    SIGNALLING_RESPONSES,
)
from server.api.dependencies import ServerDep
from server.api.event_stream import MEDIA_TYPE, event_stream_response
from server.api.openapi import RETRY_AFTER_HEADER, SHUTTING_DOWN, invalid_request, link
from server.api.rate_limit import limit_creates, limit_uploads
from server.api.schemas import (
    BATCH_SIZE_RANGE,
    CHUNK_DURATION_RANGE,
    FPS_RANGE,
    ID_PATTERN,
    AvatarNotFoundResponse,
    BusyResponse,
    CapacityRefusalResponse,
    CutUtterance,
    ErrorResponse,
    IceCandidate,
    InterruptResult,
    RateLimitedResponse,
    SessionCreated,
    SessionDescription,
    SessionEnded,
    SessionInfo,
    StreamAccepted,
)
from server.api.uploads import FILE_PROPERTY, multipart_body, read_upload_form
from server.core import AvatarServer
from server.refusal import Refusal
from server.sessions.queue import Cut, SpeechMode
from server.sessions.session import Session, SessionParams

# Control calls need an API key (when the server has any); signalling, the calls the
# player makes, also takes the session's token (README, "Access").
router = APIRouter(
    prefix="/webrtc/sessions", tags=["sessions"], dependencies=[CONTROL], responses=ACCESS_RESPONSES
)
signalling = APIRouter(
    prefix="/webrtc/sessions",
    tags=["sessions"],
    dependencies=[SIGNALLING],
    responses=SIGNALLING_RESPONSES,
)

AUDIO_FIELD = "audio_file"
MODE_FIELD = "mode"
KEEP_QUEUE_FIELD = "keep_queue"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")

NOT_FOUND = {404: {"model": ErrorResponse, "description": "Unknown or expired session."}}
INVALID_BODY = invalid_request("A body that is not the JSON object described.")

# Every call on a session takes the id that `create` answers.
SESSION_LINKS = {
    name: link(operation, description, session_id="$response.body#/session_id")
    for name, operation, description in (
        ("GetSession", "get_session", "The session's state and figures."),
        ("Offer", "offer", "Negotiate the session's peer connection."),
        ("IceCandidate", "ice_candidate", "Trickle a candidate of that connection."),
        ("Stream", "stream", "Make the avatar speak."),
        ("DeleteSession", "delete_session", "End the session."),
    )
}

RATE_LIMITED = {429: {"model": RateLimitedResponse, "description": "Too many calls from this client."}}


def _session(server: AvatarServer, session_id: str) -> Session:
    return server.sessions.get(session_id)


def player_url(request: Request, server: AvatarServer, session: Session) -> str:
    """PUBLIC_URL, or the request's own base (its Host is an allowed one: server.api.hosts)."""
    base = server.settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")
    return f"{base}/player/{session.id}?{SESSION_TOKEN_QUERY}={session.token}"


@router.post(
    "/create",
    operation_id="create_session",
    response_model=SessionCreated,
    dependencies=[Depends(limit_creates)],
    responses={
        200: {"links": SESSION_LINKS},
        404: {"model": AvatarNotFoundResponse, "description": "Unknown avatar."},
        **invalid_request("A parameter out of range (the message names it)."),
        **RATE_LIMITED,
        503: {
            "model": CapacityRefusalResponse,
            "description": "The server is at its session limit or its capacity (both with "
            "`retry_after_seconds` and `reason`), or shutting down.",
            "headers": RETRY_AFTER_HEADER,
        },
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
        player_url=player_url(request, server, session),
        session_token=session.token,
        ice_servers=session.ice_servers.current(),
        engine=server.engine.name,
        idle_ttl_seconds=server.settings.session_idle_ttl_seconds,
    )


@signalling.post(
    "/{session_id}/offer",
    operation_id="offer",
    response_model=SessionDescription,
    responses={
        **NOT_FOUND,
        400: {"model": ErrorResponse, "description": "Unusable offer."},
        **INVALID_BODY,
        413: {"model": ErrorResponse, "description": "Offer larger than MAX_OFFER_BYTES."},
    },
)
async def offer(session_id: str, body: SessionDescription, server: ServerDep) -> SessionDescription:
    """Answer an SDP offer (recvonly audio and video); a new offer replaces the connection."""
    answer = await _session(server, session_id).answer(body.sdp, body.type)
    return SessionDescription(sdp=answer.sdp, type="answer")


@signalling.post(
    "/{session_id}/ice",
    operation_id="ice_candidate",
    status_code=204,
    responses={
        **NOT_FOUND,
        400: {"model": ErrorResponse, "description": "Malformed candidate."},
        409: {"model": ErrorResponse, "description": "No offer yet."},
        **INVALID_BODY,
    },
)
async def ice_candidate(session_id: str, body: IceCandidate, server: ServerDep) -> None:
    """Add one trickled ICE candidate; an empty `candidate` signals the end of them."""
    await _session(server, session_id).add_candidate(body.model_dump())


class SpeechOptionError(Refusal):
    status = 422


def _cut(cut: Cut | None) -> CutUtterance | None:
    return None if cut is None else CutUtterance(**vars(cut))


def _form_mode(fields: dict[str, str], query: SpeechMode | None) -> SpeechMode:
    value = fields.get(MODE_FIELD)
    if value is None:
        return query or SpeechMode.REJECT
    try:
        mode = SpeechMode(value.strip().lower())
    except ValueError:
        raise SpeechOptionError(
            f"Unknown mode {value!r}: use one of {', '.join(m.value for m in SpeechMode)}."
        ) from None
    if query is not None and mode is not query:
        raise SpeechOptionError(
            f"The query says mode={query.value} and the form mode={mode.value}: give one."
        )
    return mode


def _form_flag(fields: dict[str, str], name: str, query: bool | None) -> bool:
    value = fields.get(name)
    if value is None:
        return bool(query)
    word = value.strip().lower()
    if word not in TRUE_WORDS + FALSE_WORDS:
        raise SpeechOptionError(f"The field {name!r} must be true or false, not {value!r}.")
    return word in TRUE_WORDS


@router.post(
    "/{session_id}/stream",
    operation_id="stream",
    response_model=StreamAccepted,
    openapi_extra=multipart_body(
        {
            AUDIO_FIELD: FILE_PROPERTY,
            MODE_FIELD: {"type": "string", "enum": [m.value for m in SpeechMode]},
            KEEP_QUEUE_FIELD: {"type": "boolean"},
        },
        required=[AUDIO_FIELD],
    ),
    dependencies=[Depends(limit_uploads)],
    responses={
        200: {"links": {"GetSession": SESSION_LINKS["GetSession"]}},
        **NOT_FOUND,
        **RATE_LIMITED,
        400: {
            "model": ErrorResponse,
            "description": "Empty, corrupt or truncated audio; a malformed multipart body.",
        },
        409: {
            "model": BusyResponse,
            "description": (
                "Still speaking (mode=reject), the queue is full, another upload being "
                "received (all with `retry_after_seconds`), or no client connected."
            ),
            "headers": RETRY_AFTER_HEADER,
        },
        413: {
            "model": ErrorResponse,
            "description": "Upload too large, audio too long, or past a decoding limit.",
        },
        415: {"model": ErrorResponse, "description": "Not audio, or not multipart."},
        **invalid_request(
            "No `audio_file` field or it is not a file, an unknown mode, or unusable audio."
        ),
        503: {
            "model": CapacityRefusalResponse,
            "description": "Every decode slot is taken, the server has not the capacity for "
            "this session's speech now (without `wait`), or a `wait` ran out (all with "
            "`retry_after_seconds`); or the server is shutting down.",
            "headers": RETRY_AFTER_HEADER,
        },
    },
)
async def stream(
    session_id: str,
    request: Request,
    server: ServerDep,
    mode: Annotated[SpeechMode | None, Query(description="reject (default), queue or interrupt")] = None,
    keep_queue: Annotated[bool | None, Query(description="with mode=interrupt: keep the queue")] = None,
    wait: Annotated[
        bool,
        Query(description="when the server has not the capacity for the speech now: wait "
              "in line (up to CAPACITY_MAX_WAIT_SECONDS) instead of a 503"),
    ] = False,
) -> StreamAccepted:
    """Make the avatar speak the uploaded audio (multipart field `audio_file`).

    `mode` (query or form field) says what happens while it speaks: `reject` (409),
    `queue` (after what is queued) or `interrupt` (cut it and speak now). In the query,
    a refusal comes before the upload is read. `wait` holds speech the server has not the
    capacity for until it has (the session's events say its place: `capacity_wait`).
    """
    session = _session(server, session_id)
    await session.connection_settled()
    # Refused before a body that cannot be used is read; one upload at a time per session.
    with session.receiving_speech(mode, wait_for_capacity=wait):
        try:
            upload = await read_upload_form(request, AUDIO_FIELD, server.settings.max_upload_bytes)
        except Refusal as error:
            server.metrics.upload_refused(error)
            raise
        checked = mode is not None
        mode = _form_mode(upload.fields, mode)
        if not checked:  # the mode came with the form: refuse before decoding
            session.check_can_speak(mode, wait_for_capacity=wait)
        keep = _form_flag(upload.fields, KEEP_QUEUE_FIELD, keep_queue)
        try:
            decoded = await server.decode_audio(upload.data)
        except Refusal as error:
            server.metrics.upload_refused(error)
            raise
        if wait:
            async with server.admission.speech_turn(session, session.capacity_wait_event):
                admission = session.speak(decoded.samples, mode, keep)
        else:
            admission = session.speak(decoded.samples, mode, keep)
    utterance = admission.utterance
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
        mode=mode.value,
        queue_position=admission.position,
        interrupted=_cut(admission.cut),
        dropped_utterance_ids=admission.dropped,
    )


@router.post(
    "/{session_id}/interrupt",
    operation_id="interrupt",
    response_model=InterruptResult,
    responses={**NOT_FOUND, **invalid_request("`keep_queue` is not true or false.")},
)
async def interrupt(
    session_id: str,
    server: ServerDep,
    keep_queue: Annotated[bool, Query(description="play the queued utterances next")] = False,
) -> InterruptResult:
    """Stop what the avatar says now (on the next audio frame) and drop the queue,
    unless `keep_queue`; on an idle session this is a no-op (`interrupted` null)."""
    session = _session(server, session_id)
    result = session.interrupt(keep_queue)
    return InterruptResult(
        session_id=session.id,
        interrupted=_cut(result.cut),
        dropped_utterance_ids=result.dropped,
        queued=result.queued,
    )


@router.get(
    "/{session_id}/events",
    operation_id="events",
    response_class=StreamingResponse,
    responses={
        **NOT_FOUND,
        200: {"content": {MEDIA_TYPE: {}}, "description": "Server-sent events until the session ends."},
    },
)
async def events(session_id: str, server: ServerDep) -> StreamingResponse:
    """The session's events as server-sent events: its state first, then every event
    as it happens (`event:` the type, `id:` its number, `data:` its JSON), a comment
    line as a heartbeat; the stream ends when the session ends."""
    session = _session(server, session_id)
    return event_stream_response(
        session.events, session.state_event, server.settings.events_heartbeat_seconds
    )


@signalling.get(
    "/{session_id}", operation_id="get_session", response_model=SessionInfo, responses=NOT_FOUND
)
async def get_session(session_id: str, server: ServerDep) -> SessionInfo:
    """The session's state and figures; also resets its idle timer."""
    session = _session(server, session_id)
    info = session.describe()
    return SessionInfo.model_validate({**info, "ice_servers": session.ice_servers.current()})


@router.delete(
    "/{session_id}",
    operation_id="delete_session",
    response_model=SessionEnded,
    responses={200: {"links": {"GetSession": SESSION_LINKS["GetSession"]}}, **NOT_FOUND},
)
async def delete_session(session_id: str, server: ServerDep) -> SessionEnded:
    """End the session and free everything it holds."""
    await server.sessions.close(session_id, "deleted by the client")
    return SessionEnded(session_id=session_id)
