"""The hosted player page, its static files, the demo page and the health check."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from server.api.schemas import Health

PLAYER_DIR = Path(__file__).resolve().parents[2] / "player"

router = APIRouter()


@router.get("/player/{session_id}", include_in_schema=False)
async def player_page(session_id: str) -> FileResponse:
    """The player for a session (the `player_url`); the page looks the session up itself."""
    return FileResponse(PLAYER_DIR / "index.html", headers={"Cache-Control": "no-store"})


@router.get("/", include_in_schema=False)
async def demo_page() -> FileResponse:
    """A page to try the server: start a session, watch it, make it speak."""
    return FileResponse(PLAYER_DIR / "demo.html", headers={"Cache-Control": "no-store"})


@router.get("/health", response_model=Health, tags=["server"])
async def health(request: Request) -> Health:
    server = request.app.state.server
    return Health(
        engine=server.engine.name,
        engine_reason=server.choice.reason,
        engine_details=server.engine.describe(),
        sessions=len(server.sessions),
        max_sessions=server.settings.max_sessions,
        avatars=server.avatars.available(),
        worker=server.worker.stats.as_dict(),
    )
