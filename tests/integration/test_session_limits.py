"""Session limits that hold whatever arrives at once, and clients that never connect."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import make_settings, running_app
from tests.integration.test_signalling_refusals import fresh_offer, without
from tests.webrtc_client import ClientPeer


async def test_concurrent_creates_never_exceed_max_sessions() -> None:
    # A fresh server: the first creations all wait for the avatar to load together.
    async with running_app(make_settings(max_sessions=4)) as http:
        responses = await asyncio.gather(*(http.post("/webrtc/sessions/create") for _ in range(21)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] * 4 + [503] * 17
        assert len(http.app.state.server.sessions) == 4
        assert http.app.state.server.avatars.users("demo") == 4


async def test_a_failed_creation_frees_its_reserved_slot() -> None:
    async with running_app(make_settings(max_sessions=1)) as http:
        assert (await http.post("/webrtc/sessions/create", params={"avatar_id": "nobody"})).status_code == 404
        assert (await http.post("/webrtc/sessions/create")).status_code == 200


async def test_a_session_never_offered_ends_after_the_connect_timeout() -> None:
    async with running_app(make_settings(session_connect_timeout_seconds=0.5, max_sessions=1)) as http:
        sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
        assert (await http.post("/webrtc/sessions/create")).status_code == 503
        await asyncio.sleep(1.5)
        assert (await http.get(f"/webrtc/sessions/{sid}")).status_code == 404
        assert http.app.state.server.avatars.users("demo") == 0
        assert (await http.post("/webrtc/sessions/create")).status_code == 200


@pytest.mark.webrtc
async def test_a_peer_that_never_connects_is_failed_and_its_slot_freed() -> None:
    settings = make_settings(webrtc_connect_timeout_seconds=1.0, max_sessions=1)
    async with running_app(settings) as http:
        sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
        # An offer whose candidates never come: its connection can only wait.
        sdp = without(await fresh_offer(), "a=candidate:")
        response = await http.post(f"/webrtc/sessions/{sid}/offer", json={"sdp": sdp, "type": "offer"})
        assert response.status_code == 200
        assert (await http.get(f"/webrtc/sessions/{sid}")).json()["state"] == "connecting"
        await asyncio.sleep(2.0)
        assert (await http.get(f"/webrtc/sessions/{sid}")).status_code == 404
        assert len(http.app.state.server.sessions) == 0
        assert (await http.post("/webrtc/sessions/create")).status_code == 200


@pytest.mark.webrtc
async def test_a_new_peer_that_never_connects_leaves_the_session_waiting_for_another_offer() -> None:
    settings = make_settings(webrtc_connect_timeout_seconds=1.0, session_reconnect_grace_seconds=1.5)
    async with running_app(settings) as http:
        sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
        peer = ClientPeer(http, sid)
        try:
            await peer.connect()
            sdp = without(await fresh_offer(), "a=candidate:")
            response = await http.post(f"/webrtc/sessions/{sid}/offer", json={"sdp": sdp, "type": "offer"})
            assert response.status_code == 200
            await asyncio.sleep(1.5)
            info = (await http.get(f"/webrtc/sessions/{sid}")).json()
            assert info["state"] == "reconnecting"
            await asyncio.sleep(1.5)
            assert (await http.get(f"/webrtc/sessions/{sid}")).status_code == 404
        finally:
            await peer.close()
