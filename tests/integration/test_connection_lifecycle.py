"""Peer connections come and go: trickle ICE, re-offers, lost peers, deletion."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import make_settings, running_app
from tests.server_offer_client import ServerOfferPeer
from tests.webrtc_client import ClientPeer

pytestmark = pytest.mark.webrtc


async def test_trickled_candidates_and_end_of_candidates_connect(http: httpx.AsyncClient) -> None:
    sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
    peer = ClientPeer(http, sid, trickle=True)
    try:
        await peer.connect()
        await asyncio.sleep(0.5)
        assert len(peer.received.video) > 3
        assert len(peer.received.audio) > 10
        info = (await http.get(f"/webrtc/sessions/{sid}")).json()
        assert info["state"] == "idle"
        assert info["connection_state"] == "connected"
    finally:
        await peer.close()


@pytest.mark.parametrize("flow", ["client offer", "server offer"])
async def test_the_end_of_candidates_sent_before_the_candidates_still_connects(
    http: httpx.AsyncClient, flow: str
) -> None:
    """Clients that trickle in parallel requests (D-ID's SDK) race the end of candidates
    past them: given to ICE first, it failed the connection while its checks succeeded."""
    sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
    kind = ClientPeer if flow == "client offer" else ServerOfferPeer
    peer = kind(http, sid, trickle=True, end_first=True)
    try:
        await peer.connect(timeout=10)
        await asyncio.sleep(0.5)
        assert len(peer.received.video) > 3
        info = (await http.get(f"/webrtc/sessions/{sid}")).json()
        assert info["connection_state"] == "connected"
        # Its candidates still count: a later end of candidates is no error either.
        await peer.end_candidates()
        await asyncio.sleep(0.3)
        assert (await http.get(f"/webrtc/sessions/{sid}")).json()["connection_state"] == "connected"
    finally:
        await peer.close()


async def test_a_new_offer_replaces_the_connection(http: httpx.AsyncClient) -> None:
    sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
    first = ClientPeer(http, sid)
    second = ClientPeer(http, sid)
    try:
        await first.connect()
        await second.connect()
        await asyncio.sleep(0.5)
        frames = len(second.received.video)
        await asyncio.sleep(0.5)
        assert len(second.received.video) > frames
        info = (await http.get(f"/webrtc/sessions/{sid}")).json()
        assert info["connections"] == 2
        assert info["state"] == "idle"
    finally:
        await first.close()
        await second.close()


async def test_the_replaced_client_is_told_before_its_connection_closes(
    http: httpx.AsyncClient,
) -> None:
    sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
    first = ClientPeer(http, sid)
    second = ClientPeer(http, sid)
    try:
        await first.connect()
        await first.wait_for_event("state", timeout=3)
        await second.connect()
        await first.wait_for_event("connection_replaced", timeout=3)
        await second.wait_for_event("state", timeout=3)
        assert not any(e["type"] == "connection_replaced" for e in second.received.events)
    finally:
        await first.close()
        await second.close()


async def test_a_lost_peer_may_reconnect_within_the_grace_period() -> None:
    async with running_app(make_settings(session_reconnect_grace_seconds=3.0)) as http:
        sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
        first = ClientPeer(http, sid)
        await first.connect()
        await first.close()
        await _wait_for_state(http, sid, "reconnecting")
        again = ClientPeer(http, sid)
        try:
            await again.connect()
            await asyncio.sleep(3.5)
            info = (await http.get(f"/webrtc/sessions/{sid}")).json()
            assert info["state"] == "idle"
        finally:
            await again.close()


async def test_a_lost_peer_ends_the_session_after_the_grace_period() -> None:
    async with running_app(make_settings(session_reconnect_grace_seconds=0.5)) as http:
        sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
        peer = ClientPeer(http, sid)
        await peer.connect()
        await peer.close()
        await _wait_for_state(http, sid, "reconnecting")
        await asyncio.sleep(1.0)
        assert (await http.get(f"/webrtc/sessions/{sid}")).status_code == 404
        assert http.app.state.server.avatars.users("demo") == 0


async def test_delete_tells_the_client_and_closes_its_connection(http: httpx.AsyncClient) -> None:
    sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
    peer = ClientPeer(http, sid)
    try:
        await peer.connect()
        await asyncio.sleep(0.3)
        assert (await http.delete(f"/webrtc/sessions/{sid}")).status_code == 200
        ended = await peer.wait_for_event("session_ended", timeout=3)
        assert ended["reason"] == "deleted by the client"
        frames = len(peer.received.video)
        await asyncio.sleep(0.5)
        assert len(peer.received.video) <= frames + 1
    finally:
        await peer.close()


async def _wait_for_state(http: httpx.AsyncClient, sid: str, state: str, timeout: float = 40.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        info = (await http.get(f"/webrtc/sessions/{sid}")).json()
        if info["state"] == state:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"session never reached {state!r}")
