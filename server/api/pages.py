"""The hosted player page, its static files, the demo page and the health check."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from server.api.access import SIGNALLING, SIGNALLING_RESPONSES, has_api_key
from server.api.page_headers import demo_page_headers, player_page_headers
from server.api.schemas import Alive, Health

PLAYER_DIR = Path(__file__).resolve().parents[2] / "player"
NO_STORE = {"Cache-Control": "no-store"}

router = APIRouter()


@router.get(
    "/player/{session_id}",
    include_in_schema=False,
    dependencies=[SIGNALLING],
    responses=SIGNALLING_RESPONSES,
)
async def player_page(session_id: str, request: Request) -> FileResponse:
    """The player for a session (the `player_url`); the page looks the session up itself."""
    headers = {**NO_STORE, **player_page_headers(request.app.state.server.settings)}
    return FileResponse(PLAYER_DIR / "index.html", headers=headers)


@router.get("/", include_in_schema=False)
async def demo_page(request: Request) -> FileResponse:
    """A page to try the server: start a session, watch it, make it speak."""
    headers = {**NO_STORE, **demo_page_headers(request.app.state.server.settings)}
    return FileResponse(PLAYER_DIR / "demo.html", headers=headers)


@router.get("/health", response_model=Health | Alive, tags=["server"])
async def health(request: Request) -> Health | Alive:
    """Alive; with an API key (or on a server without keys), the engine and figures too."""
    if not has_api_key(request):
        return Alive()
    server = request.app.state.server
    return Health(
        engine=server.engine.name,
        engine_reason=server.choice.reason,
        engine_details=server.engine.describe(),
        sessions=len(server.sessions),
        max_sessions=server.sessions.max_sessions,
        avatars=server.avatars.available(),
        worker=server.worker.stats.as_dict(),
        capacity=server.admission.describe(),
        tts_unavailable_reason=server.tts.unavailable_reason(),
        llm_unavailable_reason=server.llm.unavailable_reason(),
    )
