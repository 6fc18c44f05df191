"""Each session's `ice_servers` carry TURN credentials minted for it from the secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from server.settings import Settings
from tests.conftest import make_settings, running_app

SECRET = "shared-secret-of-the-tests-only"
TURN_REST_URLS = ("turn:turn.example.org:3478?transport=udp",)
TTL_SECONDS = 3600.0


def minting_settings() -> Settings:
    return make_settings(
        turn_rest_urls=TURN_REST_URLS, turn_secret=SECRET, turn_credential_ttl_seconds=TTL_SECONDS
    )


async def test_create_gives_the_session_turn_credentials_made_with_the_shared_secret() -> None:
    async with running_app(minting_settings()) as http:
        before = time.time()
        session = (await http.post("/webrtc/sessions/create")).json()

    (entry,) = session["ice_servers"]
    assert entry["urls"] == list(TURN_REST_URLS)
    expiry, session_id = entry["username"].split(":")
    assert session_id == session["session_id"]
    assert before + TTL_SECONDS - 1 <= int(expiry) <= time.time() + TTL_SECONDS
    digest = hmac.new(SECRET.encode(), entry["username"].encode(), hashlib.sha1).digest()
    assert base64.b64decode(entry["credential"]) == digest


async def test_a_session_is_looked_up_with_the_credentials_it_was_created_with() -> None:
    async with running_app(minting_settings()) as http:
        session = (await http.post("/webrtc/sessions/create")).json()
        other = (await http.post("/webrtc/sessions/create")).json()
        info = (await http.get(f"/webrtc/sessions/{session['session_id']}")).json()

    assert info["ice_servers"] == session["ice_servers"]
    assert other["ice_servers"][0]["username"] != session["ice_servers"][0]["username"]
