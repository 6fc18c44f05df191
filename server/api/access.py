"""Who may call what: API keys for control calls, a per-session token for a player.

Control routes (sessions, avatars, detailed health, metrics) take a router-level
`dependencies=[CONTROL]`; a session's player page and its signalling (offer, ice, GET)
take `dependencies=[SIGNALLING]`, which also accepts that session's token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, Request, WebSocketException
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPBearer
from starlette.requests import HTTPConnection

from server.api.refuse import POLICY_VIOLATION
from server.api.schemas import ErrorResponse
from server.refusal import Refusal
from server.settings import Settings, SettingsError

API_KEY_HEADER = "X-Api-Key"  # HeyGen's form
SESSION_TOKEN_HEADER = "X-Session-Token"
SESSION_TOKEN_QUERY = "token"
BASIC_SUFFIX = "~"  # `Basic <key>~<anything>`: what follows is ignored (D-ID's form)
MIN_KEY_LENGTH = 16
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
AUTHENTICATE = 'Bearer realm="avatar-server"'
KEY_ADVICE = (
    "send it as 'Authorization: Bearer <key>' (also 'Basic <key>' or 'X-Api-Key: <key>')"
)


class AccessRefused(Refusal):
    """A call without the credentials it needs (401), or with ones that do not fit (403)."""

    status = 401

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message, status)
        if self.status == 401:
            self.headers = {"WWW-Authenticate": AUTHENTICATE}


def load_api_keys(settings: Settings) -> tuple[str, ...]:
    """API_KEYS and the lines of API_KEYS_FILE (blank lines and `#` comments skipped)."""
    keys = list(settings.api_keys)
    if settings.api_keys_file:
        path = Path(settings.api_keys_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise SettingsError(f"API_KEYS_FILE={path} cannot be read ({error})") from None
        for line in text.splitlines():
            key = line.split("#", 1)[0].strip()
            if key:
                keys.append(key)
    short = [index for index, key in enumerate(keys, 1) if len(key) < MIN_KEY_LENGTH]
    if short:
        raise SettingsError(
            f"API keys must be at least {MIN_KEY_LENGTH} characters (key number "
            f"{', '.join(map(str, short))} is shorter); make one with "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if any(" " in key or "," in key for key in keys):
        raise SettingsError("API keys must not contain spaces or commas")
    return tuple(dict.fromkeys(keys))


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, keys: tuple[str, ...]) -> None:
    """Refuse to listen beyond loopback without keys, unless told the server is to be open."""
    if keys or settings.allow_open_access or is_loopback(settings.host):
        return
    raise SettingsError(
        f"refusing to listen on {settings.host or 'every address'} without API keys: anyone "
        "who reaches it could use and change the server. Set API_KEYS (or API_KEYS_FILE), "
        "or allow an open server explicitly with ALLOW_OPEN_ACCESS=1 (or --allow-open)"
    )


@dataclass(frozen=True)
class Credentials:
    """What a request presents: possible API keys, and a possible session token."""

    keys: tuple[str, ...]
    token: str | None


def presented(request: HTTPConnection) -> Credentials:
    keys: list[str] = []
    token = request.query_params.get(SESSION_TOKEN_QUERY) or request.headers.get(
        SESSION_TOKEN_HEADER
    )
    scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
    value = value.strip()
    if value and scheme.lower() == "bearer":
        keys.append(value)
        token = token or value  # the player sends its token this way too
    elif value and scheme.lower() == "basic":
        keys.extend(_basic_candidates(value))
    header_key = request.headers.get(API_KEY_HEADER)
    if header_key:
        keys.append(header_key.strip())
    return Credentials(tuple(keys), token)


def _basic_candidates(value: str) -> Iterator[str]:
    """The key as given (and without a `~suffix`), and, when it is base64 of `user:pass`,
    the decoded pair, or the one half of it when the other is empty (`curl -u KEY:`)."""
    for given in dict.fromkeys((value, value.split(BASIC_SUFFIX, 1)[0])):
        yield given
        try:
            decoded = base64.b64decode(given, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        user, colon, password = decoded.partition(":")
        if not colon:
            continue
        yield decoded
        if user and not password:
            yield user
        elif password and not user:
            yield password


class AccessPolicy:
    """The server's API keys, compared in constant time; with none, the server is open."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(_digest(key) for key in keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        return cls(load_api_keys(settings))

    @property
    def open(self) -> bool:
        return not self._digests

    @property
    def key_count(self) -> int:
        return len(self._digests)

    def is_key(self, candidate: str) -> bool:
        digest = _digest(candidate)
        # Compared with every key, so that the time taken says nothing about which matched.
        matches = [hmac.compare_digest(digest, key) for key in self._digests]
        return any(matches)

    def has_key(self, credentials: Credentials) -> bool:
        return any([self.is_key(candidate) for candidate in credentials.keys])

    def check_key(self, request: HTTPConnection) -> None:
        """Refuse (401) a request without a valid API key, unless the server is open."""
        if self.open:
            return
        credentials = presented(request)
        if self.has_key(credentials):
            return
        if not credentials.keys:
            raise AccessRefused(f"This call needs an API key: {KEY_ADVICE}.")
        raise AccessRefused(
            "The API key sent is not one of this server's (API_KEYS, API_KEYS_FILE); "
            f"{KEY_ADVICE}."
        )

    def check_session(
        self, request: HTTPConnection, session_id: str, session_token: str | None
    ) -> None:
        """Let an API key through, or the session's own token (`session_token`, None when
        the session does not exist: the route then answers 404). Without either, refuse
        (401) unless the server is open; a token that is not this session's is 403."""
        credentials = presented(request)
        if not self.open and self.has_key(credentials):
            return
        if credentials.token is None:
            if self.open:
                return
            if credentials.keys:
                self.check_key(request)  # refuses, naming the wrong key
            raise AccessRefused(
                f"This call needs the session's token (the `{SESSION_TOKEN_QUERY}` of its "
                f"player_url, as '?{SESSION_TOKEN_QUERY}=', '{SESSION_TOKEN_HEADER}' or "
                f"'Authorization: Bearer') or an API key: {KEY_ADVICE}."
            )
        if session_token is None:
            return
        if not hmac.compare_digest(credentials.token.encode(), session_token.encode()):
            raise AccessRefused(
                f"The token sent is not session {session_id!r}'s: use the player_url (or "
                "session_token) that creating this session returned.",
                403,
            )


def _digest(text: str) -> bytes:
    # Digests have one length, so compare_digest takes the same time whatever the key's.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def policy(connection: HTTPConnection) -> AccessPolicy:
    return connection.app.state.access


async def require_api_key(connection: HTTPConnection) -> None:
    """A control call (HTTP or WebSocket): a valid API key, when the server has any."""
    with _refusing(connection):
        policy(connection).check_key(connection)


async def require_session_access(connection: HTTPConnection) -> None:
    """A session's player page or signalling (HTTP or WebSocket, path `session_id`): its
    token or an API key."""
    session_id = connection.path_params["session_id"]
    session = connection.app.state.server.sessions.find(session_id)
    with _refusing(connection):
        policy(connection).check_session(connection, session_id, session.token if session else None)


@contextmanager
def _refusing(connection: HTTPConnection) -> Iterator[None]:
    """A WebSocket handshake is refused by closing it: no HTTP answer reaches the client."""
    try:
        yield
    except AccessRefused as refusal:
        if connection.scope["type"] == "websocket":
            raise WebSocketException(POLICY_VIOLATION, refusal.message[:120]) from None
        raise


def has_api_key(connection: HTTPConnection) -> bool:
    """Whether the caller may see what only key holders see (always, on an open server)."""
    access = policy(connection)
    return access.open or access.has_key(presented(connection))


# The same checks, declaring the credentials in the OpenAPI description (and /docs'
# "Authorize"); FastAPI's security classes take HTTP requests only.
_bearer = HTTPBearer(auto_error=False, description="An API key, or a session's token.")
_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)
_token = APIKeyQuery(name=SESSION_TOKEN_QUERY, auto_error=False, scheme_name="SessionToken")


async def _documented_control(
    request: Request, _b: Any = Depends(_bearer), _k: Any = Depends(_api_key)
) -> None:
    await require_api_key(request)


async def _documented_signalling(
    request: Request,
    _b: Any = Depends(_bearer),
    _k: Any = Depends(_api_key),
    _t: Any = Depends(_token),
) -> None:
    await require_session_access(request)


# Checks run in the event loop (async): they do no blocking work.
# For HTTP routes and routers: `dependencies=[CONTROL]`, `dependencies=[SIGNALLING]`. For a
# WebSocket route: `dependencies=[Depends(require_api_key)]` (or require_session_access).
CONTROL = Depends(_documented_control)
SIGNALLING = Depends(_documented_signalling)

ACCESS_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No valid API key (or session token)."},
}
SIGNALLING_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ACCESS_RESPONSES,
    403: {"model": ErrorResponse, "description": "A token that is not this session's."},
}
