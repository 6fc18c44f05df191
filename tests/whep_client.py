"""A WHEP player made of a real aiortc peer: it offers recvonly audio and video to
`POST /whep/{session_id}` as `application/sdp` and trickles its candidates with PATCH
(RFC 8840 fragments), as WHEP players do; what arrives is recorded as by ClientPeer."""

from __future__ import annotations

import asyncio

import httpx

from server.media.rtc import restrict_host_addresses
from server.media.sdp_fragment import ice_credentials
from tests.webrtc_client import ClientPeer

SDP = "application/sdp"
SDP_FRAGMENT = "application/trickle-ice-sdpfrag"


def without_candidates(sdp: str) -> tuple[str, list[str]]:
    """`sdp` with its candidate lines taken out, and those lines (without `a=`)."""
    lines = sdp.splitlines()
    candidates = [line[2:] for line in lines if line.startswith("a=candidate:")]
    kept = [line for line in lines if not line.startswith(("a=candidate:", "a=end-of-candidates"))]
    return "\r\n".join(kept) + "\r\n", list(dict.fromkeys(candidates))


def fragment(ufrag: str, pwd: str, mid: str, candidates: list[str], end: bool = True) -> str:
    lines = [f"a=ice-ufrag:{ufrag}", f"a=ice-pwd:{pwd}", "m=audio 9 UDP/TLS/RTP/SAVPF 0", f"a=mid:{mid}"]
    lines += [f"a={candidate}" for candidate in candidates]
    if end:
        lines.append("a=end-of-candidates")
    return "\r\n".join(lines) + "\r\n"


class WhepPeer(ClientPeer):
    """`connect()` posts the offer (without candidates when `trickle`) and PATCHes them.

    `events`: also open the session's `events` data channel (WHEP players do not)."""

    def __init__(
        self, http: httpx.AsyncClient, session_id: str, events: bool = False, **kwargs: object
    ) -> None:
        super().__init__(http, session_id, **kwargs)  # type: ignore[arg-type]
        self.events = events
        self.headers: dict[str, str] = {}
        self.resource: str | None = None
        self.etag: str | None = None
        self.links: list[str] = []

    async def offer(self) -> httpx.Response:
        """POST the offer; the answer is applied when it is a 201."""
        pc = self.pc
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        if self.events:
            pc.createDataChannel("events").on("message", self._on_event)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)
        restrict_host_addresses(pc, self.host_addresses)
        await pc.setLocalDescription(await pc.createOffer())
        sdp, self.candidates = without_candidates(pc.localDescription.sdp)
        if not self.trickle:
            sdp = pc.localDescription.sdp
        response = await self.http.post(
            f"/whep/{self.session_id}", content=sdp, headers={"Content-Type": SDP}
        )
        if response.status_code == 201:
            self.resource = response.headers["Location"]
            self.etag = response.headers["ETag"]
            self.links = response.headers.get_list("Link")
            self._hook_receivers()
            await pc.setRemoteDescription(
                type(pc.localDescription)(sdp=response.text, type="answer")
            )
        return response

    async def trickle_candidates(self, **headers: str) -> httpx.Response:
        assert self.resource is not None
        ufrag, pwd = ice_credentials(self.pc.localDescription.sdp)
        assert ufrag and pwd
        body = fragment(ufrag, pwd, "0", self.candidates)
        return await self.patch(body, **headers)

    async def patch(self, body: str, **headers: str) -> httpx.Response:
        assert self.resource is not None
        return await self.http.patch(
            self.resource, content=body, headers={"Content-Type": SDP_FRAGMENT, **headers}
        )

    async def connect(self, timeout: float = 15.0) -> None:
        response = await self.offer()
        assert response.status_code == 201, response.text
        if self.trickle:
            patched = await self.trickle_candidates()
            assert patched.status_code == 204, patched.text
        await asyncio.wait_for(self._connected.wait(), timeout)
