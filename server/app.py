"""The ASGI application, built from settings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from server.api import (
    avatars, heygen, monitoring, pages, renders, server_offer, sessions, speech_stream, text, whep,
)
from server.api import did, twin  # noqa: E402 - kept apart: the D-ID-shaped surfaces
from server.api.access import AccessPolicy
from server.api.docs import install_docs
from server.api.errors import install_error_handlers
from server.api.hosts import AllowedHostsMiddleware, HostAllowList
from server.api.log_redaction import install_token_redaction
from server.api.origins import CrossSiteMiddleware, OriginPolicy
from server.api.page_headers import SecurityHeadersMiddleware
from server.api.openapi import install_openapi
from server.api.rate_limit import RateLimits
from server.core import AvatarServer
from server.settings import Settings
from server.vendors.heygen import HeygenStreaming

logger = logging.getLogger(__name__)


def create_app(settings: Settings, server: AvatarServer | None = None) -> FastAPI:
    """The app; `server` (built from `settings` when absent) starts and stops with it."""
    access = AccessPolicy.from_settings(settings)  # SettingsError: an unreadable key file

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_token_redaction()  # after uvicorn set its loggers up
        _log_access(access)
        core = server or AvatarServer(settings)
        app.state.server = core
        app.state.heygen = HeygenStreaming(core)
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
        docs_url=None,  # install_docs serves them without a CDN
        redoc_url=None,
    )
    app.state.access = access
    app.state.rate_limits = RateLimits.from_settings(settings)
    install_error_handlers(app)
    install_docs(app)
    install_openapi(app)
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_allow_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=["Retry-After", "Location", "ETag", "Link"],
        )
    # Outermost last: security headers on everything, then the Host, then the Origin check.
    app.add_middleware(CrossSiteMiddleware, origins=OriginPolicy(settings))
    app.add_middleware(AllowedHostsMiddleware, hosts=HostAllowList(settings))
    app.add_middleware(SecurityHeadersMiddleware)
    app.include_router(sessions.router)
    app.include_router(sessions.signalling)
    app.include_router(server_offer.router)
    app.include_router(whep.router)
    app.include_router(whep.preflight)
    app.include_router(text.router)
    app.include_router(speech_stream.router)
    app.include_router(avatars.router)
    app.include_router(renders.router)
    app.include_router(heygen.router)
    app.include_router(pages.router)
    app.include_router(monitoring.router)
    for router in (did.talks, did.clips, did.agent_streams, did.agents, twin.router):
        app.include_router(router)
    app.mount("/player/assets", StaticFiles(directory=pages.PLAYER_DIR), name="player-assets")
    return app


def _log_access(access: AccessPolicy) -> None:
    if access.open:
        logger.warning(
            "the server is OPEN: no API keys are set (API_KEYS, API_KEYS_FILE), so anyone "
            "who can reach it can create sessions and change avatars"
        )
    else:
        logger.info("API keys: %d; control calls need one", access.key_count)
