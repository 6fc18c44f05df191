#!/usr/bin/env python3
"""Sessions that all speak at once, received by real aiortc peers spread over processes.

The benchmarks drive a running server with it (`speak_together`): N sessions are created
and connected by P receiver processes (this file run as a script, so that decoding the
streams is not limited to one core and does not share the benchmark's own loop), then
every session uploads the same utterance at the same instant. Each receiver keeps only
the arrival time of every frame (no pixels), and reports per session:

- during its speech (from its `speaking_started` event to its `speaking_ended` one): the
  video frames and audio frames received per second and the longest gap between two
  video frames (a freeze);
- the time from its upload to its `speaking_started` event (time to first speech);
- the server's own figures for it (`GET /webrtc/sessions/{id}`): late video frames (a
  frame repeated because its render was not ready), audio holds, video frames held back
  to audio that was sent late (a picture older than its timestamp: lip sync suffers),
  skipped frames;
- with `"sync": true` in the parameters, its lip sync: how far the mouth's opening and
  closing edges lie from the sound's, on the sender's clock as a browser's lip sync puts
  them (the mouth read from the decoded frame's luma plane, cheap enough for every session).

Real time holds for N sessions when every session spoke, received at least
`MIN_FPS_SHARE` of its playback rate with no freeze over `MAX_FREEZE_SECONDS`, and the
server counted no late frame and no audio hold.

As a child process: `sessionload.py URL COUNT PARAMS_JSON AUDIO_FILE` prints one JSON line
when its sessions are connected (`{"ready": COUNT}` or `{"error": ...}`), reads one line
`{"start_at": MONOTONIC}`, and prints `{"sessions": [...]}` when they have spoken.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import benchkit  # noqa: F401  (puts the repository on sys.path)
from tests.webrtc_client import DARK_LUMA, MOUTH_BOX, AudioSample, ClientPeer, SenderTimeline, VideoSample, audio_envelope, edges

MIN_FPS_SHARE = 0.97
MAX_FREEZE_SECONDS = 0.2
AUDIO_FRAMES_PER_SECOND = 50  # 20 ms Opus frames
CONNECT_TIMEOUT = 60.0
SPEECH_TIMEOUT_MARGIN = 30.0
LOUD_RMS = 0.05
OPEN_MOUTH = 0.08  # share of dark pixels in the mouth box of an open mouth
# The luma plane's value of DARK_LUMA (BT.601 limited range, as the VP8 decoder gives it).
DARK_Y = 16 + 219 * DARK_LUMA / 255
"""Seconds past the utterance's length that a receiver waits for its speech to end."""


class ArrivalPeer(ClientPeer):
    """A `ClientPeer` that keeps only when each frame arrived: light enough for many."""

    def __init__(self, http: httpx.AsyncClient, session_id: str, sync: bool = False) -> None:
        super().__init__(http, session_id)
        self.sync = sync
        self.video_arrivals: list[float] = []
        self.audio_arrivals: list[float] = []

    async def _read_video(self, track: Any) -> None:
        await self._count(track, self.video_arrivals, self._keep_mouth if self.sync else None)

    async def _read_audio(self, track: Any) -> None:
        await self._count(track, self.audio_arrivals, self._keep_audio if self.sync else None)

    @staticmethod
    async def _count(track: Any, arrivals: list[float], keep: Any = None) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                frame = await track.recv()
                arrivals.append(time.monotonic())
                if keep is not None:
                    keep(frame)
        except MediaStreamError:
            pass

    def _keep_mouth(self, frame: Any) -> None:
        import numpy as np

        plane = frame.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
        x1, y1, x2, y2 = MOUTH_BOX
        dark = float(np.mean(luma[y1:y2, x1:x2] < DARK_Y))
        self.received.video.append(VideoSample(frame.pts, time.monotonic(), dark, np.zeros(0)))

    def _keep_audio(self, frame: Any) -> None:
        import numpy as np

        data = frame.to_ndarray().astype(np.float32) / 32768.0
        channels = len(frame.layout.channels)
        mono = data.reshape(-1, channels).mean(axis=1) if channels > 1 else data.reshape(-1)
        self.received.audio.append(AudioSample(frame.pts, time.monotonic(), mono))

    def sync_ms(self) -> float | None:
        """Mean distance of the mouth's edges from the sound's, in ms (positive: picture late)."""
        import numpy as np

        self._record_rtp_origins()
        try:
            timeline = SenderTimeline(self.received)
        except AssertionError:
            return None
        times, rms = audio_envelope(self.received, timeline)
        sound_on, sound_off = edges(times, rms > LOUD_RMS)
        video_times = np.array([timeline.video_time(v.pts) for v in self.received.video])
        mouth = np.array([v.mouth_dark for v in self.received.video])
        mouth_on, mouth_off = edges(video_times, mouth > OPEN_MOUTH)
        distances = [
            min((m - s for m in moved), key=abs)
            for heard, moved in ((sound_on, mouth_on), (sound_off, mouth_off))
            for s in heard
            if moved
        ]
        return float(np.mean(distances)) * 1000 if distances else None

    def event_time(self, kind: str) -> float | None:
        return next((e["arrival"] for e in self.received.events if e.get("type") == kind), None)


def speech_figures(peer: ArrivalPeer, uploaded_at: float, playback_fps: float) -> dict[str, Any]:
    """What one receiver saw of its session's speech."""
    started, ended = peer.event_time("speaking_started"), peer.event_time("speaking_ended")
    if started is None or ended is None or ended <= started:
        return {"spoke": False}
    video = [t for t in peer.video_arrivals if started <= t <= ended]
    audio = [t for t in peer.audio_arrivals if started <= t <= ended]
    seconds = ended - started
    gaps = [b - a for a, b in zip(video, video[1:])]
    return {
        "spoke": True,
        "speech_seconds": seconds,
        "video_fps": len(video) / seconds,
        "audio_real_time": len(audio) / seconds / AUDIO_FRAMES_PER_SECOND,
        "max_freeze_ms": max(gaps, default=math.inf) * 1000,
        "first_speech_ms": (started - uploaded_at) * 1000,
        "playback_fps": playback_fps,
        "sync_ms": peer.sync_ms() if peer.sync else None,
    }


def refusal(response: httpx.Response, stage: str = "create") -> dict[str, Any]:
    """A refused create or upload: `refused` ("status: detail"), and what the client was told."""
    body = response.json()
    return {
        "refused": f"{response.status_code}: {body.get('detail')}",
        "stage": stage,
        "status": response.status_code,
        "retry_after": response.headers.get("Retry-After"),
        "reason": body.get("reason"),
    }


async def receive(
    url: str, count: int, params: dict[str, Any], seconds: float, audio: bytes, start: asyncio.Future
) -> list[dict[str, Any]]:
    """Create (with `params`) and connect `count` sessions; all speak `audio` (`seconds`
    long) at the time `start` gives."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        peers: list[ArrivalPeer] = []
        refused: list[str] = []
        try:
            for _ in range(count):
                response = await http.post(
                    "/webrtc/sessions/create", params={k: v for k, v in params.items() if k != "sync"}
                )
                if response.status_code != 200:
                    refused.append(refusal(response))
                    continue
                peers.append(ArrivalPeer(http, response.json()["session_id"], sync=bool(params.get("sync"))))
            await asyncio.gather(*(peer.connect(CONNECT_TIMEOUT) for peer in peers))
            print(json.dumps({"ready": len(peers), "refused": [r["refused"] for r in refused]}), flush=True)
            start_at = await start
            await asyncio.sleep(max(0.0, start_at - time.monotonic()))

            async def speak(peer: ArrivalPeer) -> dict[str, Any]:
                uploaded_at = time.monotonic()
                response = await http.post(
                    f"/webrtc/sessions/{peer.session_id}/stream",
                    files={"audio_file": ("speech.wav", audio, "audio/wav")},
                )
                answered_at = time.monotonic()
                if response.status_code != 200:
                    return {"spoke": False, **refusal(response, "speech")}
                try:
                    await peer.wait_for_event("speaking_ended", seconds + SPEECH_TIMEOUT_MARGIN)
                except TimeoutError:
                    pass
                figures = speech_figures(peer, uploaded_at, params["playback_fps"])
                figures["upload_answered_ms"] = (answered_at - uploaded_at) * 1000
                state = (await http.get(f"/webrtc/sessions/{peer.session_id}")).json()
                delay = state["sync"]["last_start_delay"]
                figures["server_start_delay_ms"] = None if delay is None else delay * 1000
                figures["server"] = {
                    "video_frames_late": state["sync"]["video_frames_late"],
                    "audio_holds": state["sync"]["audio_holds"],
                    "video_frames_held": state["sync"]["video_frames_held"],
                    "audio_hold_seconds": state["sync"]["audio_hold_seconds"],
                    "video_frames_skipped": state["media"]["video_frames_skipped"],
                }
                return figures

            results = await asyncio.gather(*(speak(peer) for peer in peers))
            return [*results, *({"spoke": False, **r} for r in refused)]
        finally:
            for peer in peers:
                await peer.close()
                await http.delete(f"/webrtc/sessions/{peer.session_id}")


async def _child(argv: list[str]) -> None:
    url, count, params, audio_file = argv[0], int(argv[1]), json.loads(argv[2]), Path(argv[3])
    seconds = params.pop("seconds")
    loop = asyncio.get_running_loop()
    start: asyncio.Future = loop.create_future()

    async def read_start() -> None:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        start.set_result(json.loads(line)["start_at"])

    reader = asyncio.ensure_future(read_start())
    try:
        sessions = await receive(url, count, params, seconds, audio_file.read_bytes(), start)
    except Exception as error:  # reported to the parent, which records it
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}), flush=True)
        return
    finally:
        reader.cancel()
    print(json.dumps({"sessions": sessions}), flush=True)


# --- the parent's side ---------------------------------------------------------------------


@dataclass
class LoadResult:
    sessions: int
    figures: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def summary(self, fps: float) -> dict[str, Any]:
        """The step's figures, and whether real time held (with why not)."""
        spoke = [f for f in self.figures if f.get("spoke")]
        problems = []
        if self.error:
            problems.append(self.error)
        refused = [f["refused"] for f in self.figures if "refused" in f]
        if refused:
            problems.append(f"{len(refused)} refused ({refused[0]})")
        if len(spoke) < self.sessions and not refused and not self.error:
            problems.append(f"{self.sessions - len(spoke)} did not finish speaking")
        late = sum(f["server"]["video_frames_late"] for f in spoke)
        holds = sum(f["server"]["audio_holds"] for f in spoke)
        held = sum(f["server"]["video_frames_held"] for f in spoke)
        min_fps = min((f["video_fps"] for f in spoke), default=0.0)
        freeze = max((f["max_freeze_ms"] for f in spoke), default=math.inf)
        first = sorted(f["first_speech_ms"] for f in spoke)
        answered = [f["upload_answered_ms"] for f in spoke]
        delays = [f["server_start_delay_ms"] for f in spoke if f.get("server_start_delay_ms") is not None]
        playback = spoke[0]["playback_fps"] if spoke else 0.0
        if spoke and min_fps < MIN_FPS_SHARE * playback:
            problems.append(f"video at {min_fps:.1f} fps < {MIN_FPS_SHARE:.0%} of {playback:g}")
        if freeze > MAX_FREEZE_SECONDS * 1000 and spoke:
            problems.append(f"a {freeze:.0f} ms freeze")
        if late:
            problems.append(f"{late} late frames")
        if holds:
            problems.append(f"{holds} audio holds")
        return {
            "sessions": self.sessions,
            "spoke": len(spoke),
            "real_time": not problems,
            "problems": problems,
            "min_video_fps": min_fps,
            "max_freeze_ms": freeze if math.isfinite(freeze) else None,
            "video_frames_late": late,
            "audio_holds": holds,
            "video_frames_held": held,
            "min_audio_real_time": min((f["audio_real_time"] for f in spoke), default=0.0),
            "first_speech_p50_ms": statistics.median(first) if first else None,
            "first_speech_p95_ms": first[min(len(first) - 1, math.ceil(0.95 * len(first)) - 1)] if first else None,
            "upload_answered_p50_ms": statistics.median(answered) if answered else None,
            "server_start_delay_p50_ms": statistics.median(delays) if delays else None,
            "server_start_delay_max_ms": max(delays, default=None),
            "aggregate_frames_per_second": len(spoke) * fps,
            "sync_ms_first": spoke[0].get("sync_ms") if spoke else None,
            "sync_ms_worst": max((f["sync_ms"] for f in spoke if f.get("sync_ms") is not None), key=abs, default=None),
        }


async def speak_together(
    url: str, count: int, processes: int, params: dict[str, Any], audio_file: Path, seconds: float
) -> LoadResult:
    """`count` sessions speaking `audio_file` (`seconds` long) at once, over `processes` receivers."""
    shares = [count // processes + (1 if i < count % processes else 0) for i in range(processes)]
    shares = [s for s in shares if s]
    child_params = json.dumps({**params, "seconds": seconds})
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__)), url, str(share), child_params, str(audio_file),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        for share in shares
    ]
    result = LoadResult(count)
    try:
        ready = await asyncio.wait_for(
            asyncio.gather(*(child.stdout.readline() for child in children)), CONNECT_TIMEOUT + 30
        )
        errors = [json.loads(line or b'{"error": "receiver exited"}').get("error") for line in ready]
        if any(errors):
            result.error = next(e for e in errors if e)
        start_at = time.monotonic() + 0.5
        for child in children:
            child.stdin.write((json.dumps({"start_at": start_at}) + "\n").encode())
            await child.stdin.drain()
        done = await asyncio.wait_for(
            asyncio.gather(*(child.stdout.readline() for child in children)),
            seconds + 2 * SPEECH_TIMEOUT_MARGIN,
        )
        for line in done:
            message = json.loads(line or b'{"error": "receiver exited"}')
            if "error" in message:
                result.error = result.error or message["error"]
            result.figures += message.get("sessions", [])
    except asyncio.TimeoutError:
        result.error = "receivers timed out"
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
            await child.wait()
    return result


if __name__ == "__main__":
    asyncio.run(_child(sys.argv[1:]))
