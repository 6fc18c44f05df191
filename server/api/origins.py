"""Cross-site requests: a page of another web site may not change anything here.

Browsers send a form post or a plain `fetch` POST to any origin without asking first
(a "simple" request, no preflight), so CORS alone does not stop a page elsewhere from
creating sessions or replacing avatars on an open server. A state-changing request (and
a WebSocket handshake) whose `Origin` is neither this server's nor in CORS_ALLOW_ORIGINS,
or that the browser marks `Sec-Fetch-Site: cross-site`, is refused with 403.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from server.api.refuse import refuse
from server.settings import Settings

STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
ANY_ORIGIN = "*"


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of an origin, or None for `null` and what is not one."""
    try:
        parts = urlsplit(url.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS.get(parts.scheme)


class OriginPolicy:
    """The origins whose pages may send state-changing requests: this server's own (by
    its Host header or PUBLIC_URL) and CORS_ALLOW_ORIGINS."""

    def __init__(self, settings: Settings) -> None:
        self.any = ANY_ORIGIN in settings.cors_allow_origins
        listed = [settings.public_url, *settings.cors_allow_origins]
        self.allowed = frozenset(o for o in map(_origin, listed) if o is not None)

    def allows(self, origin: str, host_header: str | None) -> bool:
        if self.any:
            return True
        parsed = _origin(origin)
        if parsed is None:
            return False
        if parsed in self.allowed:
            return True
        if host_header is None:
            return False
        # The scheme is not compared: behind a TLS proxy the server sees http.
        scheme, host, port = parsed
        own = _origin(f"{scheme}://{host_header}")
        return own is not None and own[1:] == (host, port)


class CrossSiteMiddleware:
    def __init__(self, app: ASGIApp, origins: OriginPolicy) -> None:
        self.app = app
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = scope["type"] == "websocket"
        if websocket or (scope["type"] == "http" and scope["method"] in STATE_CHANGING_METHODS):
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            cross_site = headers.get("sec-fetch-site") == "cross-site"
            if origin is not None and not self.origins.allows(origin, headers.get("host")):
                await refuse(
                    scope, receive, send, 403,
                    f"Requests from pages of {origin[:100]!r} are refused: it is not this "
                    "server's origin; list it in CORS_ALLOW_ORIGINS to let its pages call the API.",
                )
                return
            if origin is None and cross_site:
                await refuse(
                    scope, receive, send, 403,
                    "Cross-site requests are refused: list the calling page's origin in "
                    "CORS_ALLOW_ORIGINS to let it call the API.",
                )
                return
        await self.app(scope, receive, send)
