"""Security headers: every response says `nosniff` and sends no referrer (a player_url
carries its session's token); the pages add a Content-Security-Policy allowing only what
they need."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.settings import Settings

EVERY_RESPONSE = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
SELF = "'self'"

# The player: its own script and stylesheet, calls to this server, the stream (a
# MediaStream: no URL at all; blob: for engines that show it through one), no inline code.
PLAYER_POLICY = (
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self'",
    "media-src 'self' blob:",
    "img-src 'self' data:",
    "base-uri 'none'",
    "form-action 'none'",
)
# The demo page: the same, and the player in an iframe.
DEMO_POLICY = (*PLAYER_POLICY, "frame-src 'self'")


def frame_ancestors(settings: Settings) -> str:
    """PLAYER_FRAME_ANCESTORS, or 'self' and the CORS origins (the web apps that call the
    API are the ones that embed the player)."""
    if settings.player_frame_ancestors.strip():
        return settings.player_frame_ancestors.strip()
    return " ".join([SELF, *settings.cors_allow_origins])


def player_page_headers(settings: Settings) -> dict[str, str]:
    return {"Content-Security-Policy": _policy(PLAYER_POLICY, settings)}


def demo_page_headers(settings: Settings) -> dict[str, str]:
    return {"Content-Security-Policy": _policy(DEMO_POLICY, settings)}


def _policy(directives: tuple[str, ...], settings: Settings) -> str:
    return "; ".join([*directives, f"frame-ancestors {frame_ancestors(settings)}"])


class SecurityHeadersMiddleware:
    """Adds EVERY_RESPONSE's headers to each HTTP response that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in EVERY_RESPONSE.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
