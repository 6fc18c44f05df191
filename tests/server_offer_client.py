"""A real aiortc client of the server-offer flow: it asks for the server's offer, answers
it, and sends its candidates to `/ice` before the answer (as racing clients do; with
`end_first`, the end of candidates before them, as D-ID's SDK can); what
arrives is recorded as by ClientPeer, the events from the server-created channel."""

from __future__ import annotations

import asyncio

from aiortc import RTCSessionDescription

from server.media.rtc import restrict_host_addresses
from tests.webrtc_client import ClientPeer
from tests.whep_client import without_candidates


class ServerOfferPeer(ClientPeer):
    async def connect(self, timeout: float = 15.0) -> None:
        pc = self.pc
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)
        pc.on("datachannel", lambda channel: channel.on("message", self._on_event))
        offered = await self.http.post(f"{self.api}/server-offer")
        offered.raise_for_status()
        await pc.setRemoteDescription(RTCSessionDescription(**offered.json()))
        answer = await pc.createAnswer()
        restrict_host_addresses(pc, self.host_addresses)
        await pc.setLocalDescription(answer)
        self._hook_receivers()
        sdp, candidates = without_candidates(pc.localDescription.sdp)
        if self.end_first:
            await self.end_candidates()
        for candidate in candidates:
            sent = await self.http.post(f"{self.api}/ice", json={"candidate": candidate, "sdpMid": "0"})
            sent.raise_for_status()
        answered = await self.http.post(f"{self.api}/answer", json={"sdp": sdp, "type": "answer"})
        answered.raise_for_status()
        await asyncio.wait_for(self._connected.wait(), timeout)
