"""D-ID Streams: `/talks/streams`, `/clips/streams`, `/agents/{agent_id}/streams`, and
`GET /agents/{agent_id}/runtime` for D-ID's client SDK (README, "Coming from D-ID").

The routes are thin: the streams live in server/vendors/streams.py. Every refusal on
these paths is D-ID's `{"kind", "description"}` (server/api/vendor_errors.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from server.api.access import CONTROL
from server.api.dependencies import ServerDep
from server.api.rate_limit import limit_creates, limit_uploads
from server.api.schemas import ID_PATTERN
from server.api.vendor_errors import vendor_route
from server.api.vendor_schemas import (
    AgentRuntime,
    CreateStream,
    DidError,
    JsepOffer,
    SessionIdBody,
    StreamAnswer,
    StreamCandidate,
    StreamClosed,
    StreamCreated,
    TalkRequest,
    TalkStarted,
)
from server.avatars.errors import AvatarNotFoundError
from server.core import AvatarServer
from server.refusal import Refusal
from server.sessions.queue import SpeechMode
from server.sessions.session import Session
from server.vendors import streams as vendor
from server.vendors.streams import VendorStreams

# D-ID's error kinds by status (what its clients look at: `kind`).
KINDS = {
    400: "ValidationError",
    401: "AuthorizationError",
    403: "PermissionError",
    404: "NotFoundError",
    409: "ConflictError",
    413: "ValidationError",
    415: "ValidationError",
    422: "ValidationError",
    429: "TooManyRequestsError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}


def did_error(status: int, message: str) -> dict[str, Any]:
    return {"kind": KINDS.get(status, "UnknownError"), "description": message}


DidRoute = vendor_route(did_error)


def _error(description: str) -> dict[str, Any]:
    return {"model": DidError, "description": description}


# Every D-ID route answers these.
COMMON: dict[int | str, dict[str, Any]] = {
    400: _error("A body that is not JSON; a wrong session_id."),
    401: _error("No valid API key (`Authorization: Basic <key>`)."),
    404: _error("Unknown, deleted or expired stream (or agent)."),
    422: _error("A body that is not the JSON object described."),
}
CREATE = {
    **COMMON,
    429: _error("Too many session creations from this client."),
    503: _error("The server is at its session limit, or shutting down."),
}
NEGOTIATE = {**COMMON, 409: _error("No server offer awaits an answer (sdp), or candidates before it overflow.")}
TALK = {
    **COMMON,
    403: _error("An audio_url whose host AUDIO_URL_ALLOWED_HOSTS does not list, or a private address."),
    409: _error("No client connected yet, the queue is full, or audio is still being fetched."),
    413: _error("Speech longer than MAX_AUDIO_SECONDS, or audio over MAX_UPLOAD_BYTES."),
    415: _error("audio_url's body is not audio the server decodes."),
    429: _error("Too many talks from this client."),
    503: _error("The TTS or the decoders are unavailable or busy."),
    504: _error("audio_url took longer than AUDIO_URL_TIMEOUT_SECONDS."),
}

AgentId = Annotated[str, Path(pattern=ID_PATTERN, description="One of this server's avatars.")]


async def vendor_streams(request: Request) -> VendorStreams:
    """The app's D-ID-shaped streams (D-ID's and TWIN's), made on first use (on the
    loop: `async def`, see server/api/dependencies.py)."""
    state = request.app.state
    if getattr(state, "vendor_streams", None) is None:
        state.vendor_streams = VendorStreams()
    return state.vendor_streams


StreamsDep = Annotated[VendorStreams, Depends(vendor_streams)]


class ScriptError(Refusal):
    status = 422


TALK_MODE = SpeechMode.QUEUE
"""Talks queue behind what is playing (D-ID's fluent streams play them in order)."""


async def _talk(server: AvatarServer, session: Session, body: TalkRequest) -> vendor.Spoken:
    script = body.script
    mode = TALK_MODE
    if script.type == "text":
        if not script.input:
            raise ScriptError("A text script needs `input`: the text to say.")
        voice = script.provider.voice_id if script.provider else None
        return await vendor.say_text(server, session, script.input, voice, mode)
    if not script.audio_url:
        raise ScriptError("An audio script needs `audio_url`.")
    return await vendor.say_audio_url(server, session, script.audio_url, mode)


async def _agent_parameter(agent_id: AgentId) -> None:
    """Declares (and checks) `agent_id` of the agent routes."""


def streams_router(prefix: str, name: str) -> APIRouter:
    """The five stream routes under `prefix` (`/talks/streams`, …), operations `did_<name>_…`."""
    agents = "{agent_id}" in prefix
    dependencies = [CONTROL, Depends(_agent_parameter)] if agents else [CONTROL]
    router = APIRouter(
        prefix=prefix, tags=["D-ID"], dependencies=dependencies, route_class=DidRoute
    )

    def surface(agent_id: str | None) -> str:
        return f"agents/{agent_id}" if agents else name

    @router.post(
        "", operation_id=f"did_{name}_create", response_model=StreamCreated,
        dependencies=[Depends(limit_creates)], responses=CREATE,
    )
    async def create(
        server: ServerDep, streams: StreamsDep, request: Request,
        body: CreateStream | None = None,
    ) -> StreamCreated:
        """Create a stream: a session and the server's SDP offer, to answer with …/sdp;
        `output_resolution` (a height) scales its video."""
        agent_id = request.path_params.get("agent_id")
        body = body or CreateStream()
        if agent_id is not None:
            if not server.avatars.exists(agent_id):
                raise AvatarNotFoundError(agent_id, server.avatars.available())
            avatar = agent_id
        else:
            avatar = vendor.avatar_for(server, body.presenter_id, body.source_url)
        height = vendor.output_height(body.output_resolution if body else None)
        created = await streams.create(server, avatar, surface(agent_id), height)
        return StreamCreated(
            id=created.stream.stream_id,
            session_id=created.stream.session_id,
            offer=JsepOffer(sdp=created.offer.sdp),
            ice_servers=created.ice_servers,
        )

    @router.post(
        "/{stream_id}/sdp", operation_id=f"did_{name}_sdp", response_model=StreamClosed,
        responses=NEGOTIATE,
    )
    async def sdp(
        stream_id: str, body: StreamAnswer, server: ServerDep, streams: StreamsDep,
        request: Request,
    ) -> StreamClosed:
        """The client's SDP answer; candidates sent before it apply now."""
        stream, session = streams.get(
            server, stream_id, body.session_id, surface(request.path_params.get("agent_id"))
        )
        await vendor.answer(session, body.answer.sdp, body.answer.type)
        return StreamClosed(status="success", session_id=stream.session_id)

    @router.post(
        "/{stream_id}/ice", operation_id=f"did_{name}_ice", response_model=StreamClosed,
        responses=NEGOTIATE,
    )
    async def ice(
        stream_id: str, body: StreamCandidate, server: ServerDep, streams: StreamsDep,
        request: Request,
    ) -> StreamClosed:
        """A trickled ICE candidate; a missing or null `candidate` ends them. Candidates
        sent before the answer are kept."""
        stream, session = streams.get(
            server, stream_id, body.session_id, surface(request.path_params.get("agent_id"))
        )
        await vendor.add_candidate(session, body.candidate, body.sdpMid, body.sdpMLineIndex)
        return StreamClosed(status="success", session_id=stream.session_id)

    @router.post(
        "/{stream_id}", operation_id=f"did_{name}_talk", response_model=TalkStarted,
        dependencies=[Depends(limit_uploads)], responses=TALK,
    )
    async def talk(
        stream_id: str, body: TalkRequest, server: ServerDep, streams: StreamsDep,
        request: Request,
    ) -> TalkStarted:
        """Speak a script: `text` (`input`, SSML tags removed) through the TTS, or `audio`
        fetched from `audio_url` (only from AUDIO_URL_ALLOWED_HOSTS); queued behind what
        plays. Its events: stream/started, stream/done on the JanusDataChannel."""
        stream, session = streams.get(
            server, stream_id, body.session_id, surface(request.path_params.get("agent_id"))
        )
        spoken = await _talk(server, session, body)
        return TalkStarted(
            session_id=stream.session_id, duration=spoken.duration_seconds,
            video_id=spoken.video_id, queue_position=spoken.queue_position,
        )

    @router.delete(
        "/{stream_id}", operation_id=f"did_{name}_delete", response_model=StreamClosed,
        responses=COMMON,
    )
    async def delete(
        stream_id: str, server: ServerDep, streams: StreamsDep, request: Request,
        body: SessionIdBody | None = None,
    ) -> StreamClosed:
        """End the stream and its session."""
        stream, _ = streams.get(
            server, stream_id, (body or SessionIdBody()).session_id,
            surface(request.path_params.get("agent_id")),
        )
        await streams.delete(server, stream)
        return StreamClosed(status="success", session_id=stream.session_id)

    return router


talks = streams_router("/talks/streams", "talks")
clips = streams_router("/clips/streams", "clips")
agent_streams = streams_router("/agents/{agent_id}/streams", "agents")

agents = APIRouter(prefix="/agents", tags=["D-ID"], dependencies=[CONTROL], route_class=DidRoute)


@agents.get(
    "/{agent_id}/runtime", operation_id="did_agent_runtime", response_model=AgentRuntime,
    responses=COMMON,
)
async def agent_runtime(agent_id: AgentId, server: ServerDep) -> AgentRuntime:
    """What D-ID's client SDK reads of an agent before it connects: every avatar of this
    server is an agent of the same id."""
    if not server.avatars.exists(agent_id):
        raise AvatarNotFoundError(agent_id, server.avatars.available())
    return AgentRuntime(id=agent_id, name=agent_id)
