"""A real aiortc client of HeyGen's Streaming API v1, as HeyGen's v1 clients drive it:
`streaming.new` for the server's offer, the answer made, its candidates sent to
`streaming.ice` before `streaming.start` carries the answer (clients race these calls);
what arrives is recorded as by ClientPeer, the events from the server-created channel
(JSON in binary messages)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from aiortc import RTCSessionDescription

from server.media.rtc import restrict_host_addresses
from tests.webrtc_client import ClientPeer
from tests.whep_client import without_candidates


async def heygen_new(http: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    return await http.post("/v1/streaming.new", json={"quality": "high", **fields})


class HeygenPeer(ClientPeer):
    """Create it with the `data` of a `streaming.new` answer."""

    def __init__(self, http: httpx.AsyncClient, created: dict[str, Any], **options: Any) -> None:
        super().__init__(http, created["session_id"], **options)
        self.offer = created["sdp"]
        self.binary_messages = 0

    async def call(self, name: str, **fields: Any) -> httpx.Response:
        return await self.http.post(f"/v1/streaming.{name}", json={"session_id": self.session_id, **fields})

    async def answer(self) -> dict[str, str]:
        """Apply the offer, make the answer, trickle its candidates; the answer to start."""
        pc = self.pc
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)
        pc.on("datachannel", lambda channel: channel.on("message", self._on_message))
        await pc.setRemoteDescription(RTCSessionDescription(**self.offer))
        answer = await pc.createAnswer()
        restrict_host_addresses(pc, self.host_addresses)
        await pc.setLocalDescription(answer)
        self._hook_receivers()
        sdp, candidates = without_candidates(pc.localDescription.sdp)
        for candidate in candidates:
            sent = await self.call("ice", candidate={"candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0})
            assert sent.status_code == 200, sent.text
        return {"type": "answer", "sdp": sdp}

    async def connect(self, timeout: float = 15.0) -> None:
        started = await self.call("start", sdp=await self.answer())
        assert started.status_code == 200, started.text
        assert started.json()["code"] == 100
        await asyncio.wait_for(self._connected.wait(), timeout)

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self.binary_messages += 1
        self._on_event(message)  # type: ignore[arg-type]  # json.loads takes bytes
