"""WHEP (draft-ietf-wish-whep, with the mechanics of WHIP, RFC 9725): any WHEP player
watches a session.

`POST /whep/{session_id}` with the player's SDP offer creates a WHEP resource: the
session's peer connection, answered `sendonly` (audio and video in one MediaStream). The
resource takes trickled candidates (PATCH) and ends with DELETE; the session stays, with
its speech APIs. A second viewer's POST replaces the connection, as a second offer does
(the first is sent `connection_replaced`), and the first resource is gone (404).

An empty POST asks for the server's offer instead (earlier WHEP drafts; the fallback of
@eyevinn/webrtc-player): the player PATCHes its answer (`application/sdp`) on the resource.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from server.api.access import SIGNALLING, SIGNALLING_RESPONSES
from server.api.dependencies import ServerDep
from server.api.schemas import ErrorResponse, WhepEnded
from server.core import AvatarServer
from server.media.sdp_fragment import ice_credentials, parse_fragment
from server.refusal import Refusal
from server.sessions.session import Session

SDP = "application/sdp"
SDP_FRAGMENT = "application/trickle-ice-sdpfrag"
MAX_SDP_BYTES = 64 * 1024
"""An offer or fragment past this is refused (413); browsers' offers are a few KiB."""
ALLOWED_METHODS = "OPTIONS, POST"
RESOURCE_METHODS = "OPTIONS, PATCH, DELETE"

router = APIRouter(
    prefix="/whep", tags=["whep"], dependencies=[SIGNALLING], responses=SIGNALLING_RESPONSES
)
preflight = APIRouter(prefix="/whep", tags=["whep"])
"""OPTIONS without credentials: browsers send their preflights without them."""


class WhepRefusal(Refusal):
    """A WHEP request refused: 404 an ended resource, 412, 413, 415, 422."""


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


NOT_FOUND = {404: _error("Unknown or expired session (or WHEP resource).")}
TOO_LARGE = {413: _error(f"A body over {MAX_SDP_BYTES} bytes.")}


def _body(*content_types: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {kind: {"schema": {"type": "string"}} for kind in content_types},
        }
    }


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _read(request: Request, content_type: str) -> str:
    given = _content_type(request)
    if given != content_type:
        raise WhepRefusal(
            f"Send the body as Content-Type: {content_type} (got {given or 'none'!r}).", 415
        )
    data = bytearray()
    async for chunk in request.stream():
        data.extend(chunk)
        if len(data) > MAX_SDP_BYTES:
            raise WhepRefusal(f"The body is over {MAX_SDP_BYTES} bytes.", 413)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise WhepRefusal("The body is not UTF-8 text.", 400) from None


def _base_url(request: Request, server: AvatarServer) -> str:
    return server.settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ice_server_links(ice_servers: list[dict[str, Any]]) -> list[str]:
    """`Link` header values for `ice_servers` (RFC 9725, section 4.6): one per URL."""
    links = []
    for entry in ice_servers:
        urls = entry["urls"]
        for url in [urls] if isinstance(urls, str) else urls:
            value = f'<{url}>; rel="ice-server"'
            if entry.get("username") is not None:
                value += (
                    f"; username={_quoted(entry['username'])}"
                    f"; credential={_quoted(entry.get('credential') or '')}"
                    '; credential-type="password"'
                )
            links.append(value)
    return links


def etag(connection_id: str) -> str:
    return f'"{connection_id}"'


def _resource(server: AvatarServer, session_id: str, resource_id: str) -> Session:
    session = server.sessions.get(session_id)  # 404
    if session.connection_id != resource_id:
        raise WhepRefusal(
            "This WHEP resource has ended (deleted, or replaced by another viewer): POST a "
            f"new offer to /whep/{session_id}.",
            404,
        )
    return session


@router.post(
    "/{session_id}",
    operation_id="whep_offer",
    status_code=201,
    response_class=Response,
    openapi_extra=_body(SDP),
    responses={
        201: {
            "description": "The SDP answer (the server's offer, to an empty POST); "
            "`Location` is the WHEP resource.",
            "content": {SDP: {"schema": {"type": "string"}}},
            "headers": {
                "Location": {"description": "The WHEP resource's URL.", "schema": {"type": "string"}},
                "ETag": {"description": "The resource's ICE session.", "schema": {"type": "string"}},
                "Link": {
                    "description": 'The session\'s ICE servers, `rel="ice-server"` (one header each).',
                    "schema": {"type": "string"},
                },
            },
        },
        400: _error("Unusable offer (not SDP, no audio or video, not UTF-8)."),
        **NOT_FOUND,
        **TOO_LARGE,
        415: _error("Not Content-Type: application/sdp."),
    },
)
async def whep_offer(session_id: str, request: Request, server: ServerDep) -> Response:
    """Watch the session: the player's SDP offer (recvonly audio and video), answered with
    the session's `sendonly` media; it replaces any earlier connection of the session. An
    empty body gets the server's offer, answered with PATCH (`application/sdp`)."""
    session = server.sessions.get(session_id)
    offer = await _read(request, SDP)
    if offer.strip():
        description = await session.answer(offer, "offer")
    else:
        description = await session.create_offer()
    resource = session.connection_id or ""
    response = Response(description.sdp, 201, media_type=SDP)
    response.headers["Location"] = f"{_base_url(request, server)}/whep/{session_id}/{resource}"
    response.headers["ETag"] = etag(resource)
    for value in ice_server_links(session.ice_servers.current()):
        response.headers.append("Link", value)
    return response


@router.patch(
    "/{session_id}/{resource_id}",
    operation_id="whep_trickle",
    status_code=204,
    response_class=Response,
    openapi_extra=_body(SDP_FRAGMENT, SDP),
    responses={
        204: {"description": "The candidates (or the answer) were applied."},
        400: _error("Not a trickle ICE fragment, a malformed candidate, or an unusable answer."),
        **NOT_FOUND,
        409: _error("An answer (`application/sdp`) where the server made no offer."),
        412: _error("`If-Match` is not the resource's ETag."),
        **TOO_LARGE,
        415: _error("Neither application/trickle-ice-sdpfrag nor application/sdp."),
        422: _error("An ICE restart (new ufrag and pwd): not supported, POST a new offer."),
    },
)
async def whep_trickle(
    session_id: str, resource_id: str, request: Request, server: ServerDep
) -> Response:
    """Trickle candidates (RFC 8840 fragment), or answer the server's offer
    (`application/sdp`); `If-Match`, when sent, must be the ETag."""
    session = _resource(server, session_id, resource_id)
    if_match = request.headers.get("if-match")
    if if_match is not None and not _matches(if_match, etag(resource_id)):
        raise WhepRefusal(f"If-Match {if_match[:80]!r} is not this resource's ETag.", 412)
    if _content_type(request) == SDP:  # the answer to an empty POST's server offer
        await session.accept_answer(await _read(request, SDP))
        return Response(status_code=204)
    fragment = parse_fragment(await _read(request, SDP_FRAGMENT))
    remote = session.remote_sdp  # None while a server offer awaits its answer
    if remote is not None and _is_restart(fragment.ufrag, fragment.pwd, ice_credentials(remote)):
        raise WhepRefusal(
            "ICE restarts are not supported by this server: POST a new offer to "
            f"/whep/{session_id} to reconnect.",
            422,
        )
    for candidate in fragment.candidates:
        await session.add_candidate(candidate)
    if fragment.end_of_candidates:
        await session.add_candidate({"candidate": ""})
    return Response(status_code=204)


def _is_restart(ufrag: str | None, pwd: str | None, current: tuple[str | None, str | None]) -> bool:
    """New ICE credentials in a fragment ask for an ICE restart (RFC 8840, section 4.4)."""
    return (ufrag is not None and ufrag != current[0]) or (pwd is not None and pwd != current[1])


def _matches(if_match: str, tag: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in if_match.split(",")]
    return "*" in tags or tag in tags


@router.delete(
    "/{session_id}/{resource_id}",
    operation_id="whep_delete",
    response_model=WhepEnded,
    responses=NOT_FOUND,
)
async def whep_delete(session_id: str, resource_id: str, server: ServerDep) -> WhepEnded:
    """End the WHEP resource: its connection closes; the session stays (until its idle
    timeout), for a new viewer or offer."""
    session = _resource(server, session_id, resource_id)
    await session.end_connection(resource_id, "ended by the WHEP client")
    return WhepEnded(session_id=session_id, resource_id=resource_id)


@preflight.options(
    "/{session_id}",
    operation_id="whep_options",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "What the endpoint accepts (`Accept-Post`)."}},
)
async def whep_options(session_id: str) -> Response:
    """The endpoint's methods; CORS preflights are answered before this (CORS_ALLOW_ORIGINS)."""
    return Response(status_code=204, headers={"Allow": ALLOWED_METHODS, "Accept-Post": SDP})


@preflight.options(
    "/{session_id}/{resource_id}",
    operation_id="whep_resource_options",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "What the resource accepts (`Accept-Patch`)."}},
)
async def whep_resource_options(session_id: str, resource_id: str) -> Response:
    """The resource's methods."""
    return Response(
        status_code=204, headers={"Allow": RESOURCE_METHODS, "Accept-Patch": SDP_FRAGMENT}
    )
