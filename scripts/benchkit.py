"""Shared pieces of the benchmark scripts: a server in its own process, results output."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS_DIR = ROOT / "bench-results"
# Loopback only, no STUN/TURN: a benchmark sends no packet off this machine.
SAFE_ENVIRONMENT = {
    "WEBRTC_STUN_URLS": "",
    "WEBRTC_TURN_URLS": "",
    "WEBRTC_ICE_HOST_ADDRESSES": "127.0.0.1",
    "LOG_LEVEL": "warning",
}
UNLIMITED_CAPACITY = {
    "CAPACITY_CALIBRATE": "0",
    "CAPACITY_RENDER_FRAMES_PER_SECOND": "1000000",
    "CAPACITY_ENCODE_FRAMES_PER_SECOND": "1000000",
}
"""For a benchmark that looks for where real time breaks: admission control out of the way."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`avatar-server serve` on loopback, in a process of its own."""

    def __init__(self, process: subprocess.Popen[bytes], url: str) -> None:
        self.process = process
        self.url = url

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (all its threads)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@contextlib.contextmanager
def server_process(extra_env: dict[str, str] | None = None, start_timeout: float = 60.0) -> Iterator[ServerProcess]:
    port = free_port()
    env = {**os.environ, **SAFE_ENVIRONMENT, **(extra_env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)
        yield ServerProcess(process, url)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [
        [f"{v:.1f}" if isinstance(v, float) else str(v) for v in row] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for i, row in enumerate(cells):
        print("  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
        if i == 0:
            print("  " + "  ".join("-" * width for width in widths))


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    path.write_text(json.dumps({"machine": machine, **data}, indent=2))
    print(f"\nwrote {path.relative_to(ROOT)}")
    return path


# --- one session watched by a real aiortc receiver (bench_latency, bench_streaming, bench_interrupt)


def percentile(values: Sequence[float], p: float) -> float:
    """The `p`th percentile, interpolated between the closest ranks (NaN for none)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lower, upper = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (k - lower)


def figures(values: Sequence[float]) -> dict[str, float]:
    """p50, p95, min, max and mean of `values`."""
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def session_arguments(parser: Any, trials: int) -> None:
    """The flags every receiver benchmark takes: --trials, --fps, --playback-fps."""
    parser.add_argument("--trials", type=int, default=trials)
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--playback-fps", type=int, default=15)


@contextlib.asynccontextmanager
async def watched_session(
    fps: int, playback_fps: int, settle_seconds: float = 1.0, extra_env: dict[str, str] | None = None
) -> Any:
    """A server in its own process, one session on it and a real aiortc receiver
    connected to it for `settle_seconds`: yields (server, http, session id, peer). The
    peer is closed at the end; what it received stays in `peer.received`."""
    import asyncio

    from tests.webrtc_client import ClientPeer

    with server_process(extra_env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            params = {"fps": fps, "playback_fps": playback_fps}
            sid = (await http.post("/webrtc/sessions/create", params=params)).json()["session_id"]
            peer = ClientPeer(http, sid)
            await peer.connect()
            await asyncio.sleep(settle_seconds)
            try:
                yield server, http, sid, peer
            finally:
                await peer.close()


async def wait_for_event(peer: Any, kind: str, utterance_id: str, timeout: float) -> dict[str, Any]:
    """The receiver's data-channel event `kind` about `utterance_id`."""
    import asyncio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in peer.received.events:
            if event.get("type") == kind and event.get("utterance_id") == utterance_id:
                return event
        await asyncio.sleep(0.005)
    raise TimeoutError(f"no {kind} for {utterance_id}")


def speech_edges(peer: Any, loud_rms: float, open_mouth: float) -> dict[str, Any]:
    """Where sound and mouth open and close at the receiver, on the sender's clock
    (RTCP sender reports, as a browser's lip sync sees them): seconds, as arrays."""
    import numpy as np

    from tests.webrtc_client import SenderTimeline, audio_envelope, edges

    received = peer.received
    timeline = SenderTimeline(received)
    times, rms = audio_envelope(received, timeline)
    sound_on, sound_off = edges(times, rms > loud_rms)
    video_times = np.array([timeline.video_time(v.pts) for v in received.video])
    mouth = np.array([v.mouth_dark for v in received.video])
    mouth_on, mouth_off = edges(video_times, mouth > open_mouth)
    return {
        "timeline": timeline, "sound_on": sound_on, "sound_off": sound_off,
        "mouth_on": mouth_on, "mouth_off": mouth_off,
    }
