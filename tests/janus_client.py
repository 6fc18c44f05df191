"""A real aiortc client of the D-ID-shaped surfaces (D-ID Streams, TWIN's stream package).

It does what D-ID's streaming demo does: create the stream (the server's offer), create
its own `JanusDataChannel`, answer, and trickle its candidates to the ice call before the
answer (as racing clients do). The Janus messages it gets are kept as (subject, payload).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
from aiortc import RTCSessionDescription

from server.media.rtc import restrict_host_addresses
from tests.webrtc_client import ClientPeer
from tests.whep_client import without_candidates

TWIN = "/v1/stream-package"


class JanusPeer(ClientPeer):
    """One stream: `base` is `/talks/streams` (or clips, agents), or TWIN for TWIN's calls."""

    def __init__(
        self, http: httpx.AsyncClient, base: str = "/talks/streams",
        create_body: dict[str, Any] | None = None, **kwargs: Any,
    ) -> None:
        super().__init__(http, "", **kwargs)
        self.base = base
        self.create_body = create_body or {}
        self.stream_id = ""
        self.vendor_session_id = ""
        self.created: dict[str, Any] = {}
        self.janus: list[tuple[str, Any, float]] = []
        self.channel: Any = None

    @property
    def twin(self) -> bool:
        return self.base == TWIN

    def ref(self, **fields: Any) -> dict[str, Any]:
        """The stream's identifying fields, in the surface's names."""
        if self.twin:
            return {"streamId": self.stream_id, "sessionId": self.vendor_session_id, **fields}
        return {"session_id": self.vendor_session_id, **fields}

    async def create(self) -> httpx.Response:
        path = f"{TWIN}/setupConnection" if self.twin else self.base
        response = await self.http.post(path, json=self.create_body)
        if response.status_code == 200:
            self.created = response.json()
            self.stream_id = self.session_id = self.created["id"]
            self.vendor_session_id = self.created["session_id"]
        return response

    async def send_answer(self, sdp: str) -> httpx.Response:
        answer = {"type": "answer", "sdp": sdp}
        if self.twin:
            return await self.http.post(f"{TWIN}/startConnection", json=self.ref(answer=answer))
        return await self.http.post(f"{self.base}/{self.stream_id}/sdp", json=self.ref(answer=answer))

    async def send_candidate(self, candidate: str | None) -> httpx.Response:
        fields = {"candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0} if candidate else {}
        if self.twin:
            return await self.http.post(f"{TWIN}/sendNetworkInfo", json=self.ref(**fields))
        return await self.http.post(f"{self.base}/{self.stream_id}/ice", json=self.ref(**fields))

    async def talk(self, text: str | None = None, audio_url: str | None = None) -> httpx.Response:
        if self.twin:
            return await self.http.post(f"{TWIN}/startStream", json=self.ref(input=text))
        script = {"type": "text", "input": text} if audio_url is None else {
            "type": "audio", "audio_url": audio_url}
        return await self.http.post(f"{self.base}/{self.stream_id}", json=self.ref(script=script))

    async def delete(self) -> httpx.Response:
        if self.twin:
            return await self.http.post(f"{TWIN}/deleteStream", json=self.ref())
        return await self.http.request(
            "DELETE", f"{self.base}/{self.stream_id}", json=self.ref()
        )

    async def connect(self, timeout: float = 15.0) -> None:
        created = await self.create()
        assert created.status_code == 200, created.text
        pc = self.pc
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)
        await pc.setRemoteDescription(RTCSessionDescription(**self.created["offer"]))
        self.channel = pc.createDataChannel("JanusDataChannel")
        self.channel.on("message", self._on_janus)
        answer = await pc.createAnswer()
        restrict_host_addresses(pc, self.host_addresses)
        await pc.setLocalDescription(answer)
        self._hook_receivers()
        sdp, candidates = without_candidates(pc.localDescription.sdp)
        for candidate in candidates:
            sent = await self.send_candidate(candidate)
            assert sent.status_code == 200, sent.text
        answered = await self.send_answer(sdp)
        assert answered.status_code == 200, answered.text
        ended = await self.send_candidate(None)
        assert ended.status_code == 200, ended.text
        await asyncio.wait_for(self._connected.wait(), timeout)

    def interrupt(self) -> None:
        """What D-ID's client SDK sends to interrupt: a JSON object on the channel."""
        self.channel.send(json.dumps({"type": "stream/interrupt", "timestamp": 0}))

    def _on_janus(self, message: str) -> None:
        subject, _, payload = message.partition(":")
        self.janus.append((subject, json.loads(payload) if payload else None, time.monotonic()))

    async def wait_for_janus(
        self, subject: str, timeout: float, video_id: str | None = None
    ) -> tuple[Any, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for got, payload, arrival in self.janus:
                if got != subject:
                    continue
                if video_id is None or (payload or {}).get("metadata", {}).get("videoId") == video_id:
                    return payload, arrival
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no {subject!r} within {timeout} s: {self.janus}")

    def mouth_opened_between(self, start: float, end: float) -> float:
        """The most the demo mouth opened in frames that arrived in [start, end]."""
        shares = [v.mouth_dark for v in self.received.video if start <= v.arrival <= end]
        return max(shares, default=0.0)
