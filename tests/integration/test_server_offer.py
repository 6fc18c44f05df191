"""The server-offer flow: the server offers (media and its own events channel), the
client answers; candidates sent before the answer are kept, not refused."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from server.media.rtc import restrict_host_addresses
from tests.whep_client import without_candidates

pytestmark = pytest.mark.webrtc


async def test_candidates_before_the_answer_are_kept_and_the_client_connects_with_events(
    http: httpx.AsyncClient,
) -> None:
    sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
    api = f"/webrtc/sessions/{sid}"
    offered = await http.post(f"{api}/server-offer")
    assert offered.status_code == 200, offered.text
    offer = offered.json()
    assert offer["type"] == "offer"
    assert "m=application" in offer["sdp"]
    assert offer["sdp"].count("a=sendonly") == 2

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    frames: list[object] = []
    messages: list[dict] = []
    connected = asyncio.Event()

    async def read(track: object) -> None:
        while True:
            frames.append(await track.recv())  # type: ignore[attr-defined]

    tasks: list[asyncio.Task[None]] = []
    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(read(track))) if track.kind == "video" else None)
    pc.on("datachannel", lambda channel: channel.on("message", lambda m: messages.append(json.loads(m))))
    pc.on("connectionstatechange", lambda: connected.set() if pc.connectionState == "connected" else None)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(**offer))
        answer = await pc.createAnswer()
        restrict_host_addresses(pc, ("127.0.0.1",))
        await pc.setLocalDescription(answer)
        sdp, candidates = without_candidates(pc.localDescription.sdp)
        assert candidates
        for candidate in candidates:  # before the answer, as racing clients do
            early = await http.post(f"{api}/ice", json={"candidate": candidate, "sdpMid": "0"})
            assert early.status_code == 204, early.text
        answered = await http.post(f"{api}/answer", json={"sdp": sdp, "type": "answer"})
        assert answered.status_code == 204, answered.text
        await asyncio.wait_for(connected.wait(), 15)
        deadline = asyncio.get_running_loop().time() + 5
        while not (len(frames) > 3 and messages):
            assert asyncio.get_running_loop().time() < deadline, (len(frames), messages)
            await asyncio.sleep(0.05)
        assert messages[0]["type"] == "state"
        info = (await http.get(api)).json()
        assert info["connection_state"] == "connected"
    finally:
        for task in tasks:
            task.cancel()
        await pc.close()


async def test_an_answer_without_a_server_offer_is_409(http: httpx.AsyncClient) -> None:
    sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
    response = await http.post(f"/webrtc/sessions/{sid}/answer", json={"sdp": "v=0", "type": "answer"})
    assert response.status_code == 409
    assert "server-offer" in response.json()["detail"]


async def test_an_offer_sent_as_the_answer_is_400(http: httpx.AsyncClient) -> None:
    sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
    await http.post(f"/webrtc/sessions/{sid}/server-offer")
    response = await http.post(f"/webrtc/sessions/{sid}/answer", json={"sdp": "v=0", "type": "offer"})
    assert response.status_code == 400
    assert "answer" in response.json()["detail"]


async def test_an_unusable_answer_is_400(http: httpx.AsyncClient) -> None:
    sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
    await http.post(f"/webrtc/sessions/{sid}/server-offer")
    response = await http.post(f"/webrtc/sessions/{sid}/answer", json={"sdp": "nonsense", "type": "answer"})
    assert response.status_code == 400
    assert response.json()["detail"]
