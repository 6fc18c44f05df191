"""The server-offer flow: the server offers the session's connection, the client answers.

Next to the client-offer flow (POST …/offer): here the server creates the offer (sendonly
audio and video, and the `events` data channel, which it opens itself); candidates the
client trickles before its answer are kept and applied after it.
"""

from __future__ import annotations

from fastapi import APIRouter

from server.api.access import SIGNALLING, SIGNALLING_RESPONSES
from server.api.dependencies import ServerDep
from server.api.openapi import invalid_request
from server.api.schemas import ErrorResponse, SessionDescription
from server.sessions.session import NegotiationError

router = APIRouter(
    prefix="/webrtc/sessions",
    tags=["sessions"],
    dependencies=[SIGNALLING],
    responses=SIGNALLING_RESPONSES,
)

NOT_FOUND = {404: {"model": ErrorResponse, "description": "Unknown or expired session."}}


@router.post(
    "/{session_id}/server-offer",
    operation_id="server_offer",
    response_model=SessionDescription,
    responses=NOT_FOUND,
)
async def server_offer(session_id: str, server: ServerDep) -> SessionDescription:
    """The server's SDP offer for a new connection (replacing any earlier one): sendonly
    audio and video and the `events` data channel; answer it with POST …/answer."""
    offer = await server.sessions.get(session_id).create_offer()
    return SessionDescription(sdp=offer.sdp, type="offer")


@router.post(
    "/{session_id}/answer",
    operation_id="answer",
    status_code=204,
    responses={
        **NOT_FOUND,
        400: {"model": ErrorResponse, "description": "Unusable answer, or not an answer."},
        409: {"model": ErrorResponse, "description": "No server offer awaits an answer."},
        **invalid_request("A body that is not the JSON object described."),
    },
)
async def answer(session_id: str, body: SessionDescription, server: ServerDep) -> None:
    """Answer the server's offer; candidates trickled before it (POST …/ice) apply now."""
    session = server.sessions.get(session_id)
    if body.type != "answer":
        raise NegotiationError(f"Expected an SDP of type 'answer', got {body.type!r}.")
    await session.accept_answer(body.sdp)
