"""The ASGI application, built from settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from server.api import avatars, pages, sessions
from server.api.errors import install_error_handlers
from server.api.rate_limit import RateLimits
from server.core import AvatarServer
from server.settings import Settings


def create_app(settings: Settings, server: AvatarServer | None = None) -> FastAPI:
    """The app; `server` (built from `settings` when absent) starts and stops with it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        core = server or AvatarServer(settings)
        app.state.server = core
        await core.start()
        try:
            yield
        finally:
            await core.close()

    app = FastAPI(
        title="avatar-server",
        summary="A lip-synced talking avatar streamed over WebRTC.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.rate_limits = RateLimits.from_settings(settings)
    install_error_handlers(app)
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_allow_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["*"],
            expose_headers=["Retry-After", "Location"],
        )
    app.include_router(sessions.router)
    app.include_router(avatars.router)
    app.include_router(pages.router)
    app.mount("/player/assets", StaticFiles(directory=pages.PLAYER_DIR), name="player-assets")
    return app
