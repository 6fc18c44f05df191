"""A refused offer or candidate changes nothing of a session's working connection."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from tests.conftest import make_settings, running_app
from tests.webrtc_client import ClientPeer

STREAMING_TIMEOUT_SECONDS = 10.0
"""How long a connection that is kept may take to show that it still streams."""

pytestmark = pytest.mark.webrtc

CANDIDATE = "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host"


async def fresh_offer(audio: str = "recvonly", video: str = "recvonly") -> str:
    """A real aiortc offer with the given directions (candidates gathered in it)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction=audio)
        pc.addTransceiver("video", direction=video)
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


def without(sdp: str, prefix: str) -> str:
    return "".join(line + "\r\n" for line in sdp.splitlines() if not line.startswith(prefix))


@pytest.fixture
async def connected(http: httpx.AsyncClient) -> AsyncIterator[ClientPeer]:
    sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
    peer = ClientPeer(http, sid)
    try:
        await peer.connect()
        await peer.wait_for_event("state", timeout=3)
        yield peer
    finally:
        await peer.close()


async def assert_still_connected(http: httpx.AsyncClient, peer: ClientPeer) -> None:
    """The session keeps its one connection, which still streams to the peer."""
    frames = len(peer.received.video)
    # New frames within a bound (on a loaded machine the first keyframe can take seconds).
    deadline = asyncio.get_running_loop().time() + STREAMING_TIMEOUT_SECONDS
    while len(peer.received.video) <= frames and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    assert len(peer.received.video) > frames
    info = (await http.get(peer.api)).json()
    assert (info["state"], info["connections"], info["connection_state"]) == ("idle", 1, "connected")
    assert not any(e["type"] == "connection_replaced" for e in peer.received.events)


async def post_offer(http: httpx.AsyncClient, peer: ClientPeer, sdp: str) -> httpx.Response:
    return await http.post(f"{peer.api}/offer", json={"sdp": sdp, "type": "offer"})


async def test_sendonly_offer_is_refused_and_keeps_the_connection(
    http: httpx.AsyncClient, connected: ClientPeer
) -> None:
    response = await post_offer(http, connected, await fresh_offer(audio="sendonly", video="sendonly"))
    assert response.status_code == 400
    assert "recvonly or sendrecv" in response.json()["detail"]
    await assert_still_connected(http, connected)


async def test_inactive_video_is_refused_and_keeps_the_connection(
    http: httpx.AsyncClient, connected: ClientPeer
) -> None:
    response = await post_offer(http, connected, await fresh_offer(video="inactive"))
    assert response.status_code == 400
    assert "video is inactive" in response.json()["detail"]
    await assert_still_connected(http, connected)


async def test_offer_without_fingerprint_is_refused_and_keeps_the_connection(
    http: httpx.AsyncClient, connected: ClientPeer
) -> None:
    response = await post_offer(http, connected, without(await fresh_offer(), "a=fingerprint:"))
    assert response.status_code == 400
    assert "DTLS fingerprint" in response.json()["detail"]
    await assert_still_connected(http, connected)


async def test_offer_without_ice_credentials_is_refused_and_keeps_the_connection(
    http: httpx.AsyncClient, connected: ClientPeer
) -> None:
    response = await post_offer(http, connected, without(await fresh_offer(), "a=ice-pwd:"))
    assert response.status_code == 400
    assert "ICE ufrag and password" in response.json()["detail"]
    await assert_still_connected(http, connected)


async def test_offer_without_a_common_codec_is_refused_and_keeps_the_connection(
    http: httpx.AsyncClient, connected: ClientPeer
) -> None:
    sdp = await fresh_offer()
    # Rename every video codec to one the server does not have.
    sdp = re.sub(r"a=rtpmap:(\d+) (VP8|H264|rtx)/90000", r"a=rtpmap:\1 XYZ/90000", sdp)
    response = await post_offer(http, connected, sdp)
    assert response.status_code == 400
    await assert_still_connected(http, connected)


async def test_oversized_offer_is_413_and_keeps_the_connection(
    http: httpx.AsyncClient, connected: ClientPeer
) -> None:
    sdp = await fresh_offer()
    padding = "".join(f"a=x-padding-{i}:{'p' * 1000}\r\n" for i in range(1000))  # ~1 MB
    response = await post_offer(http, connected, sdp + padding)
    assert response.status_code == 413
    assert "limit of 65536" in response.json()["detail"]
    await assert_still_connected(http, connected)


async def test_garbage_offer_is_refused_and_keeps_the_connection(
    http: httpx.AsyncClient, connected: ClientPeer
) -> None:
    sdp = re.sub(r"m=video \d+", "m=video nine", await fresh_offer())
    response = await post_offer(http, connected, sdp)
    assert response.status_code == 400
    await assert_still_connected(http, connected)


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        ("candidate:1 1 udp 2130706431 127.0.0.1 99999 typ host", "port"),
        ("candidate:1 1 udp 2130706431 127.0.0.1 0 typ host", "port"),
        ("candidate:1 1 udp 2130706431 999.999.1.1 50000 typ host", "address"),
        ("candidate:1 1 udp 2130706431 example.com 50000 typ host", "address"),
        ("candidate:1 7 udp 2130706431 127.0.0.1 50000 typ host", "component"),
        ("candidate:1 0 udp 2130706431 127.0.0.1 50000 typ host", "component"),
        ("candidate:1 1 sctp 2130706431 127.0.0.1 50000 typ host", "protocol"),
        ("candidate:1 1 udp 99999999999 127.0.0.1 50000 typ host", "priority"),
        ("candidate:1 1 udp -5 127.0.0.1 50000 typ host", "priority"),
        ("candidate:1 1 udp 2130706431 127.0.0.1 50000 typ local", "type"),
        ("candidate:f@@ 1 udp 2130706431 127.0.0.1 50000 typ host", "foundation"),
        ("candidate:1 1 udp 2130706431 127.0.0.1 50000 host", "expected"),
        ("candidate:1 1 udp 2130706431 127.0.0.1 50000 typ srflx raddr 1.2.3 rport 9", "related address"),
        ("candidate:1 1 udp 2130706431 127.0.0.1 50000 typ srflx raddr", "pairs"),
        ("candidate:1 1 tcp 2130706431 127.0.0.1 9 typ host tcptype sideways", "tcptype"),
    ],
)
async def test_malformed_candidate_is_400_and_keeps_the_connection(
    http: httpx.AsyncClient, connected: ClientPeer, candidate: str, reason: str
) -> None:
    response = await http.post(
        f"{connected.api}/ice", json={"candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0}
    )
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    await assert_still_connected(http, connected)


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ({"sdpMid": "7"}, "names no m-section"),
        ({"sdpMLineIndex": 5}, "names no m-section"),
        ({"sdpMid": "1", "sdpMLineIndex": 0}, "different m-sections"),
        ({}, "needs sdpMid or sdpMLineIndex"),
    ],
)
async def test_candidate_for_no_m_section_of_the_offer_is_400(
    http: httpx.AsyncClient, connected: ClientPeer, where: dict, reason: str
) -> None:
    response = await http.post(f"{connected.api}/ice", json={"candidate": CANDIDATE, **where})
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    await assert_still_connected(http, connected)


@pytest.mark.parametrize(
    "candidate",
    [
        CANDIDATE,
        "candidate:842163049 1 udp 1677729535 203.0.113.7 61000 typ srflx raddr 0.0.0.0 rport 0",
        "candidate:3 1 tcp 1518280447 10.0.0.2 9 typ host tcptype active",
        "candidate:4 1 udp 2122260223 0c3e1a52-5b7d-4b1e-9d8a-3f4e0b2a1c9d.local 54321 typ host",
        "candidate:5 1 udp 2122260223 fe80::1 54321 typ host",
        "candidate:6 2 udp 2122260222 127.0.0.1 50001 typ host",  # RTCP: ignored
    ],
)
async def test_well_formed_candidates_are_accepted(
    http: httpx.AsyncClient, connected: ClientPeer, candidate: str
) -> None:
    response = await http.post(
        f"{connected.api}/ice", json={"candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0}
    )
    assert response.status_code == 204, response.text
    await assert_still_connected(http, connected)


async def test_a_failed_offer_on_a_session_without_a_connection_still_times_out() -> None:
    settings = make_settings(session_connect_timeout_seconds=1.0)
    async with running_app(settings) as http:
        sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
        sdp = without(await fresh_offer(), "a=fingerprint:")
        for _ in range(3):  # refused offers do not keep it alive
            response = await http.post(f"/webrtc/sessions/{sid}/offer", json={"sdp": sdp, "type": "offer"})
            assert response.status_code == 400
            await asyncio.sleep(0.3)
        await asyncio.sleep(1.2)
        assert (await http.get(f"/webrtc/sessions/{sid}")).status_code == 404
        assert len(http.app.state.server.sessions) == 0
