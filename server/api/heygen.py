"""HeyGen Streaming API v1: `/v1/streaming.new|start|ice|task|interrupt|keep_alive|stop|list`.

A HeyGen v1 client works with only its base URL changed (README, "Coming from HeyGen"):
the same fields, answers wrapped as `{code: 100, message, data}`, refusals as HeyGen's
`{code, message}` with its codes. Keys as `X-Api-Key` (or `Authorization: Bearer`).
The logic is in server/vendors/heygen.py; these handlers only translate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Depends, Request

from server.api.access import CONTROL, _api_key, _bearer, presented, require_api_key
from server.api.heygen_schemas import (
    CreateTokenResponse,
    EmptyResponse,
    HeygenError,
    HeygenSdp,
    IceRequest,
    ListResponse,
    NewSessionData,
    NewSessionRequest,
    NewSessionResponse,
    SessionList,
    SessionRequest,
    SessionSummary,
    StartRequest,
    TaskData,
    TaskRequest,
    TaskResponse,
    TokenData,
)
from server.api.rate_limit import limit_creates, limit_uploads
from server.api.vendor_errors import InvalidRequest, refusal_route
from server.refusal import Refusal
from server.vendors.heygen import HeygenStreaming, as_heygen, ice_servers2, invalid_body


def _write(error: Refusal) -> tuple[int, dict[str, Any], dict[str, str]]:
    """A refusal in HeyGen's shape, `{code, message}`, with HeyGen's code for its kind."""
    if isinstance(error, InvalidRequest):
        refusal = invalid_body(_describe(error.extra.get("errors", [])))
    else:
        refusal = as_heygen(error)
    return refusal.status, refusal.body(), refusal.headers


HeygenRoute = refusal_route(_write)


def _describe(errors: Sequence[Any]) -> str:
    parts = []
    for item in errors:
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {item.get('msg', 'invalid')}")
    return "the body is not the JSON object described (" + "; ".join(parts) + ")."


def _error(description: str) -> dict[str, Any]:
    return {"model": HeygenError, "description": description}


COMMON = {
    401: _error("No valid API key (code 400112)."),
    404: _error("Unknown, expired or stopped-long-ago session (code 10006)."),
    422: _error("A body that is not the JSON object described (code 400128)."),
}
STATE = {400: _error("A call in the wrong session state (codes 10001-10005: new, connecting, connected, closing, closed).")}

def streaming(request: Request) -> HeygenStreaming:
    return request.app.state.heygen


async def heygen_access(
    request: Request, _b: Any = Depends(_bearer), _k: Any = Depends(_api_key)
) -> None:
    """An API key, or a token of streaming.create_token as `Authorization: Bearer`."""
    token = presented(request).token
    if token is not None and streaming(request).tokens.valid(token):
        return
    await require_api_key(request)


router = APIRouter(
    prefix="/v1",
    tags=["HeyGen Streaming API v1"],
    dependencies=[Depends(heygen_access)],
    responses={401: COMMON[401]},
    route_class=HeygenRoute,
)


@router.post(
    "/streaming.new",
    operation_id="heygen_new",
    response_model=NewSessionResponse,
    dependencies=[Depends(limit_creates)],
    responses={
        400: _error("`version` other than v1 (code 400175)."),
        404: _error("An avatar this server does not have, with no HEYGEN_AVATAR_FALLBACK (code 10012)."),
        422: COMMON[422],
        429: _error("The rate limit (code 400123)."),
        503: _error("At the session limit or the server's capacity (code 10007, with Retry-After)."),
    },
)
async def new(
    request: Request, body: NewSessionRequest | None = None
) -> NewSessionResponse:
    """A new session and the server's SDP offer (audio, video, and a data channel with
    HeyGen's events); answer it with streaming.start."""
    created = await streaming(request).new(body or NewSessionRequest())
    servers = created.ice_servers
    return NewSessionResponse(
        data=NewSessionData(
            session_id=created.session.id,
            sdp=HeygenSdp(type="offer", sdp=created.sdp),
            ice_servers=[url for entry in ice_servers2(servers) for url in entry["urls"]],
            ice_servers2=ice_servers2(servers),
        )
    )


@router.post(
    "/streaming.start",
    operation_id="heygen_start",
    response_model=EmptyResponse,
    responses={
        **COMMON,
        400: _error("An unusable answer (code 400175), or not in state new (codes 10002-10005)."),
    },
)
async def start(request: Request, body: StartRequest) -> EmptyResponse:
    """The client's SDP answer to the offer of streaming.new; the connection starts."""
    await streaming(request).start(body.session_id, body.sdp.type, body.sdp.sdp)
    return EmptyResponse()


@router.post(
    "/streaming.ice",
    operation_id="heygen_ice",
    response_model=EmptyResponse,
    responses={**COMMON, 400: _error("A malformed candidate (code 400175), or the session closed (code 10005).")},
)
async def ice(request: Request, body: IceRequest) -> EmptyResponse:
    """One trickled ICE candidate (kept until the answer when it comes first); none, or
    an empty one, ends them."""
    candidate = body.candidate.model_dump() if body.candidate is not None else {"candidate": ""}
    await streaming(request).ice(body.session_id, candidate)
    return EmptyResponse()


@router.post(
    "/streaming.task",
    operation_id="heygen_task",
    response_model=TaskResponse,
    dependencies=[Depends(limit_uploads)],
    responses={
        **COMMON,
        **STATE,
        413: _error("The text's speech is longer than MAX_AUDIO_SECONDS (code 40039)."),
        422: _error("Empty or too long text (code 40039), or a malformed body (code 400128)."),
        429: _error("The speech queue is full (code 10014), or the rate limit (code 400123)."),
        502: _error("The LLM failed (task_type chat)."),
        503: _error("The TTS backend or the LLM is unavailable or failed."),
    },
)
async def task(request: Request, body: TaskRequest) -> TaskResponse:
    """Speak `text` after what is being said (`repeat`), or send it to the LLM and speak
    its reply (`chat`, `talk`); `task_id` is the task's utterance, named in the data
    channel's avatar_start_talking and avatar_stop_talking."""
    done = await streaming(request).task(body.session_id, body.text, body.task_type)
    return TaskResponse(data=TaskData(duration_ms=done.duration_ms, task_id=done.task_id))


@router.post(
    "/streaming.interrupt",
    operation_id="heygen_interrupt",
    response_model=EmptyResponse,
    responses={**COMMON, **STATE},
)
async def interrupt(request: Request, body: SessionRequest) -> EmptyResponse:
    """Stop what the avatar says now and drop what was queued; nothing when it is silent."""
    streaming(request).interrupt(body.session_id)
    return EmptyResponse()


@router.post(
    "/streaming.keep_alive",
    operation_id="heygen_keep_alive",
    response_model=EmptyResponse,
    responses={**COMMON, **STATE},
)
async def keep_alive(request: Request, body: SessionRequest) -> EmptyResponse:
    """Reset the session's idle timer (SESSION_IDLE_TTL_SECONDS)."""
    streaming(request).keep_alive(body.session_id)
    return EmptyResponse()


@router.post(
    "/streaming.stop",
    operation_id="heygen_stop",
    response_model=EmptyResponse,
    responses={**COMMON, **STATE},
)
async def stop(request: Request, body: SessionRequest) -> EmptyResponse:
    """End the session and free everything it holds; later calls on it answer 10005."""
    await streaming(request).stop(body.session_id)
    return EmptyResponse()


@router.get("/streaming.list", operation_id="heygen_list", response_model=ListResponse)
async def listed(request: Request) -> ListResponse:
    """The live sessions made with streaming.new, with their HeyGen states."""
    sessions = [
        SessionSummary(session_id=session.id, status=state, created_at=session.created_at)
        for session, state in streaming(request).listed()
    ]
    return ListResponse(data=SessionList(sessions=sessions))


@router.post(
    "/streaming.create_token",
    operation_id="heygen_create_token",
    response_model=CreateTokenResponse,
    dependencies=[CONTROL],
)
async def create_token(request: Request) -> CreateTokenResponse:
    """A token for a browser: it stands in for the API key on these calls (as
    `Authorization: Bearer`) for HEYGEN_TOKEN_TTL_SECONDS; minting one takes the key."""
    return CreateTokenResponse(data=TokenData(token=streaming(request).tokens.mint()))
