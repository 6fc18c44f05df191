"""A real aiortc client peer for the tests: receives the avatar and records what arrived.

Every frame is kept with its RTP timestamp, and the sender reports (RTCP SR) of each
track are captured, so that audio and video can be put on the sender's clock exactly as
a browser's lip sync does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtcpSrPacket

from server.media.clock import NTP_SECOND, NTP_UNIX_OFFSET
from server.media.rtc import restrict_host_addresses

AUDIO_RATE = 48_000
VIDEO_RATE = 90_000

# The demo avatar's mouth, in pixels of its 512 x 512 frames (it sways a few pixels).
MOUTH_BOX = (200, 300, 312, 390)  # x1, y1, x2, y2
# Mouth interior is dark red; skin, lips and teeth are all much brighter than this.
DARK_LUMA = 90
RTP_ARRIVALS_KEPT = 512


@dataclass
class VideoSample:
    pts: int
    arrival: float
    """When aiortc's receiver handed the decoded frame over: its jitter buffer releases a
    frame only once the next frame's first packet is in (a playback frame later)."""
    mouth_dark: float
    """Share of dark pixels in the mouth box: near 0 closed, well above when open."""
    thumbnail: np.ndarray
    """A coarse grey copy of the whole frame, to tell idle frames apart."""
    image: np.ndarray | None = None
    packets_in: float | None = None
    """When the frame's last RTP packet arrived: when a receiver that decodes a frame on
    its marker bit (a browser) has it."""


@dataclass
class AudioSample:
    pts: int
    arrival: float
    """When aiortc's receiver handed the decoded frame over: its audio jitter buffer holds
    4 packets (80 ms) before it lets the first one out."""
    samples: np.ndarray  # float32 mono
    packets_in: float | None = None
    """When the frame's RTP packet arrived."""


@dataclass
class SenderReport:
    ntp: float  # seconds
    rtp: int
    arrival: float


@dataclass
class Received:
    video: list[VideoSample] = field(default_factory=list)
    audio: list[AudioSample] = field(default_factory=list)
    video_reports: list[SenderReport] = field(default_factory=list)
    audio_reports: list[SenderReport] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    audio_rtp_origin: int | None = None
    video_rtp_origin: int | None = None


def mouth_dark_share(image: np.ndarray) -> float:
    x1, y1, x2, y2 = MOUTH_BOX
    region = image[y1:y2, x1:x2].astype(np.float32)
    luma = region @ np.array([0.299, 0.587, 0.114], np.float32)
    return float(np.mean(luma < DARK_LUMA))


def _unwrap(rtp: int, reference: int) -> int:
    """`rtp` as a signed distance from `reference`, across 32-bit wrap-around."""
    delta = (rtp - reference) % 2**32
    return delta - 2**32 if delta >= 2**31 else delta


class ClientPeer:
    """An aiortc peer that receives a session's audio and video over loopback."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        session_id: str,
        host_addresses: tuple[str, ...] = ("127.0.0.1",),
        keep_images: bool = False,
        trickle: bool = False,
        configuration: RTCConfiguration | None = None,
        end_first: bool = False,
    ) -> None:
        self.http = http
        self.session_id = session_id
        self.host_addresses = host_addresses
        self.keep_images = keep_images
        self.trickle = trickle
        self.end_first = end_first
        """Trickling, send the end of candidates before them, as a client whose parallel
        requests race does."""
        self.pc = RTCPeerConnection(configuration or RTCConfiguration(iceServers=[]))
        self.received = Received()
        self._tasks: list[asyncio.Task[None]] = []
        self._connected = asyncio.Event()
        self._rtp_arrivals: dict[str, dict[int, float]] = {}
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    @property
    def api(self) -> str:
        return f"/webrtc/sessions/{self.session_id}"

    async def connect(self, timeout: float = 15.0) -> None:
        pc = self.pc
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        channel = pc.createDataChannel("events")
        channel.on("message", self._on_event)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)
        restrict_host_addresses(pc, self.host_addresses)
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        candidates = []
        if self.trickle:
            # Send the offer bare and the candidates one by one, as browsers do.
            lines = sdp.splitlines()
            sections = [i for i, line in enumerate(lines) if line.startswith("m=")]
            end = sections[1] if len(sections) > 1 else len(lines)
            candidates = [
                line[2:] for line in lines[sections[0] : end] if line.startswith("a=candidate:")
            ]
            sdp = "\r\n".join(
                line for line in lines if not line.startswith(("a=candidate:", "a=end-of-candidates"))
            ) + "\r\n"
        response = await self.http.post(f"{self.api}/offer", json={"sdp": sdp, "type": "offer"})
        response.raise_for_status()
        answer = response.json()
        self._hook_receivers()
        await pc.setRemoteDescription(RTCSessionDescription(**answer))
        if self.trickle and self.end_first:
            await self.end_candidates()
        for candidate in candidates:
            response = await self.http.post(
                f"{self.api}/ice", json={"candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0}
            )
            response.raise_for_status()
        if self.trickle and not self.end_first:
            await self.end_candidates()
        await asyncio.wait_for(self._connected.wait(), timeout)
        await self._server_side_connected(timeout)

    async def _server_side_connected(self, timeout: float) -> None:
        """Wait for the server to see the connection up too: it is the DTLS client, so its
        side is up a flight after this one (a GET right away may still say connecting)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = await self.http.get(self.api)
            if response.status_code != 200 or response.json().get("connection_state") == "connected":
                return
            await asyncio.sleep(0.01)

    async def end_candidates(self) -> None:
        response = await self.http.post(f"{self.api}/ice", json={"candidate": ""})
        response.raise_for_status()

    async def close(self) -> None:
        self._record_rtp_origins()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pc.close()

    async def wait_for_event(self, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.received.events:
                if event.get("type") == kind:
                    return event
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no {kind!r} event within {timeout} s: {self.received.events}")

    def _on_state(self) -> None:
        if self.pc.connectionState == "connected":
            self._connected.set()

    def _on_event(self, message: str) -> None:
        event = json.loads(message)
        event["arrival"] = time.monotonic()
        self.received.events.append(event)
        for listener in self.listeners:
            listener(event)

    def _on_track(self, track: Any) -> None:
        reader = self._read_video if track.kind == "video" else self._read_audio
        self._tasks.append(asyncio.ensure_future(reader(track)))

    async def _read_video(self, track: Any) -> None:
        try:
            while True:
                frame = await track.recv()
                image = frame.to_ndarray(format="rgb24")
                grey = image.mean(axis=2)
                thumbnail = grey.reshape(32, image.shape[0] // 32, 32, image.shape[1] // 32).mean(axis=(1, 3))
                self.received.video.append(
                    VideoSample(
                        frame.pts,
                        time.monotonic(),
                        mouth_dark_share(image),
                        thumbnail.astype(np.float32),
                        image if self.keep_images else None,
                        self._packets_in("video", frame.pts),
                    )
                )
        except MediaStreamError:
            pass

    async def _read_audio(self, track: Any) -> None:
        try:
            while True:
                frame = await track.recv()
                data = frame.to_ndarray().astype(np.float32) / 32768.0
                channels = len(frame.layout.channels)
                mono = data.reshape(-1, channels).mean(axis=1) if channels > 1 else data.reshape(-1)
                self.received.audio.append(
                    AudioSample(frame.pts, time.monotonic(), mono, self._packets_in("audio", frame.pts))
                )
        except MediaStreamError:
            pass

    def _record_rtp_origins(self) -> None:
        for transceiver in self.pc.getTransceivers():
            mapper = transceiver.receiver._RTCRtpReceiver__timestamp_mapper  # aiortc private
            origin = getattr(mapper, "_origin", None)
            if transceiver.kind == "video":
                self.received.video_rtp_origin = origin
            else:
                self.received.audio_rtp_origin = origin

    def _packets_in(self, kind: str, pts: int) -> float | None:
        """When the last RTP packet of the frame aiortc decoded as `pts` arrived."""
        transceiver = next((t for t in self.pc.getTransceivers() if t.kind == kind), None)
        if transceiver is None:
            return None
        origin = getattr(transceiver.receiver._RTCRtpReceiver__timestamp_mapper, "_origin", None)
        if origin is None:
            return None
        arrivals = self._rtp_arrivals.get(kind)
        return None if arrivals is None else arrivals.pop((pts + origin) % 2**32, None)

    def _hook_rtp_arrivals(self) -> None:
        """Note when each RTP timestamp's last packet arrives (before any jitter buffer)."""
        for transceiver in self.pc.getTransceivers():
            receiver = transceiver.receiver
            arrivals = self._rtp_arrivals.setdefault(transceiver.kind, {})
            original = receiver._handle_rtp_packet

            async def note(packet: Any, arrival_time_ms: int, _original: Any = original,
                           _arrivals: dict[int, float] = arrivals) -> None:
                _arrivals[packet.timestamp] = time.monotonic()
                if len(_arrivals) > RTP_ARRIVALS_KEPT:  # frames never decoded: forget them
                    del _arrivals[next(iter(_arrivals))]
                await _original(packet, arrival_time_ms)

            receiver._handle_rtp_packet = note

    def _hook_receivers(self) -> None:
        """Record the sender reports and the RTP packets' arrival (call once the
        transceivers exist, before the connection starts)."""
        self._hook_sender_reports()
        self._hook_rtp_arrivals()

    def _hook_sender_reports(self) -> None:
        for transceiver in self.pc.getTransceivers():
            receiver = transceiver.receiver
            reports = (
                self.received.video_reports
                if transceiver.kind == "video"
                else self.received.audio_reports
            )
            original = receiver._handle_rtcp_packet

            async def capture(packet: Any, _original: Any = original, _reports: Any = reports) -> None:
                if isinstance(packet, RtcpSrPacket):
                    info = packet.sender_info
                    _reports.append(
                        SenderReport(info.ntp_timestamp / NTP_SECOND, info.rtp_timestamp, time.monotonic())
                    )
                await _original(packet)

            receiver._handle_rtcp_packet = capture


class SenderTimeline:
    """Maps received frames to the sender's wall clock through its SR reports.

    aiortc's receiver gives frames `pts = RTP timestamp - first RTP timestamp`; the
    first one is read back from the receiver to get the RTP timestamp again.
    """

    def __init__(self, received: Received) -> None:
        if not received.audio_reports or not received.video_reports:
            raise AssertionError("no RTCP sender reports were received for both tracks")
        if received.audio_rtp_origin is None or received.video_rtp_origin is None:
            raise AssertionError("no RTP origin was recorded for both tracks")
        self._audio = received.audio_reports[-1]
        self._video = received.video_reports[-1]
        self._audio_origin = received.audio_rtp_origin
        self._video_origin = received.video_rtp_origin
        self._origin = self._audio.ntp

    def audio_time(self, pts: int) -> float:
        rtp = (self._audio_origin + pts) % 2**32
        return self._audio.ntp - self._origin + _unwrap(rtp, self._audio.rtp) / AUDIO_RATE

    def video_time(self, pts: int) -> float:
        rtp = (self._video_origin + pts) % 2**32
        return self._video.ntp - self._origin + _unwrap(rtp, self._video.rtp) / VIDEO_RATE

    def sender_time(self, unix_time: float) -> float:
        """A `time.time()` instant on this timeline (the sender's clock is this machine's)."""
        return unix_time + NTP_UNIX_OFFSET - self._origin


def last_loud_sample(
    received: Received, timeline: SenderTimeline, start: float, end: float, threshold: float = 0.05
) -> float | None:
    """Sender time of the last received sample louder than `threshold` in [start, end)."""
    last = None
    for sample in received.audio:
        t0 = timeline.audio_time(sample.pts)
        if t0 + len(sample.samples) / AUDIO_RATE < start or t0 >= end:
            continue
        times = t0 + np.arange(len(sample.samples)) / AUDIO_RATE
        loud = (np.abs(sample.samples) > threshold) & (times >= start) & (times < end)
        if loud.any():
            t = float(times[np.flatnonzero(loud)[-1]])
            last = t if last is None else max(last, t)
    return last


def audio_envelope(received: Received, timeline: SenderTimeline, window: float = 0.005) -> tuple[np.ndarray, np.ndarray]:
    """(times, rms) of the received audio in `window`-second steps, on the sender's clock."""
    if not received.audio:
        return np.zeros(0), np.zeros(0)
    step = int(AUDIO_RATE * window)
    times, levels = [], []
    for sample in received.audio:
        start = timeline.audio_time(sample.pts)
        x = sample.samples
        for i in range(0, len(x) - step + 1, step):
            times.append(start + i / AUDIO_RATE)
            levels.append(float(np.sqrt(np.mean(np.square(x[i : i + step])))))
    return np.array(times), np.array(levels)


def edges(times: np.ndarray, active: np.ndarray) -> tuple[list[float], list[float]]:
    """Times where `active` turns on, and where it turns off."""
    rises, falls = [], []
    for i in range(1, len(active)):
        if active[i] and not active[i - 1]:
            rises.append(float(times[i]))
        elif active[i - 1] and not active[i]:
            falls.append(float(times[i]))
    return rises, falls
