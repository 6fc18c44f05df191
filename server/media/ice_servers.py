"""The ICE servers of one session: the configured STUN and static TURN servers, and TURN
credentials minted for the session from a secret it shares with the TURN server.

The minted credentials follow the TURN REST API convention that coturn implements with
`use-auth-secret` (draft-uberti-behave-turn-rest-00): the username is
`<expiry as unix time>:<session id>` and the password is base64(HMAC-SHA1(secret,
username)), so the TURN server checks them with nothing but the secret and its clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.settings import Settings

USERNAME_SEPARATOR = ":"

RENEWAL_MARGIN_SECONDS = 600.0
"""Credentials closer to their expiry than this (or half their lifetime, if that is less)
are replaced by new ones when next asked for. coturn checks the expiry on every
allocation refresh (by default every 10 minutes), so a connection set up with
credentials that are about to expire would lose its relay soon after."""


@dataclass(frozen=True)
class TurnCredential:
    """A time-limited TURN username and password."""

    username: str
    password: str
    expires_at: int
    """Unix time after which the TURN server refuses them."""


def turn_rest_credential(secret: str, session_id: str, expires_at: int) -> TurnCredential:
    """The TURN REST API credential for `session_id`, valid until `expires_at` (unix time)."""
    if USERNAME_SEPARATOR in session_id:
        raise ValueError(f"a session id for a TURN username cannot hold {USERNAME_SEPARATOR!r}")
    username = f"{expires_at}{USERNAME_SEPARATOR}{session_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredential(username, base64.b64encode(digest).decode("ascii"), expires_at)


class SessionIceServers:
    """What one session gives its clients as `ice_servers` and uses for its own peer
    connections: the same credentials every time (a player reconnecting gets the ones it
    had), renewed only once they come near their expiry."""

    def __init__(
        self, settings: Settings, session_id: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._settings = settings
        self._session_id = session_id
        self._clock = clock
        self._credential: TurnCredential | None = None

    @property
    def credential(self) -> TurnCredential | None:
        """The session's current minted TURN credential; None without a shared secret."""
        settings = self._settings
        if not (settings.turn_secret and settings.turn_rest_urls):
            return None
        now = self._clock()
        ttl = settings.turn_credential_ttl_seconds
        margin = min(RENEWAL_MARGIN_SECONDS, ttl / 2)
        if self._credential is None or self._credential.expires_at - now < margin:
            self._credential = turn_rest_credential(
                settings.turn_secret, self._session_id, int(now + ttl)
            )
        return self._credential

    def current(self) -> list[dict[str, Any]]:
        """The ICE servers in the form browsers' RTCConfiguration takes.

        The minted TURN entry comes before the static one: aiortc (the server's side)
        uses only the first TURN URL it is given.
        """
        servers = self._settings.ice_servers()
        credential = self.credential
        if credential is not None:
            after_stun = 1 if self._settings.stun_urls else 0
            servers.insert(
                after_stun,
                {
                    "urls": list(self._settings.turn_rest_urls),
                    "username": credential.username,
                    "credential": credential.password,
                },
            )
        return servers
