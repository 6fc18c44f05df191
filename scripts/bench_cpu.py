#!/usr/bin/env python3
"""Server CPU per session, idle and speaking, with real aiortc clients on loopback.

The server runs in its own process (demo engine, 512x512 avatar); its CPU time (all
threads: event loop, render worker, encoders) is read from /proc over a window while the
sessions idle, then while they speak without pause.

    .venv/bin/python scripts/bench_cpu.py [--sessions 1 2] [--seconds 10] [--playback-fps 25]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx

from benchkit import print_table, server_process, write_json
from tests.audio_files import encode, speech_like
from tests.webrtc_client import ClientPeer

UTTERANCE_SECONDS = 4.0


async def keep_speaking(http: httpx.AsyncClient, sid: str, audio: bytes, until: float) -> int:
    spoken = 0
    while time.monotonic() < until:
        response = await http.post(f"/webrtc/sessions/{sid}/stream", files={"audio_file": ("s.wav", audio, "audio/wav")})
        if response.status_code == 200:
            spoken += 1
        await asyncio.sleep(0.05)
    return spoken


async def measure(server, seconds: float, work=None) -> float:
    """Server CPU seconds per wall second over `seconds`, with `work` running."""
    cpu, wall = server.cpu_seconds(), time.monotonic()
    if work is None:
        await asyncio.sleep(seconds)
    else:
        await work
    return (server.cpu_seconds() - cpu) / (time.monotonic() - wall)


async def run_count(count: int, args: argparse.Namespace) -> dict:
    audio = encode(speech_like(UTTERANCE_SECONDS, bursts=[(0.0, UTTERANCE_SECONDS)]), "wav")
    with server_process() as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            params = {"fps": args.fps, "playback_fps": args.playback_fps}
            peers = []
            for _ in range(count):
                sid = (await http.post("/webrtc/sessions/create", params=params)).json()["session_id"]
                peer = ClientPeer(http, sid)
                await peer.connect()
                peers.append(peer)
            try:
                await asyncio.sleep(2.0)  # let encoders and rates settle
                idle = await measure(server, args.seconds)
                until = time.monotonic() + args.seconds
                work = asyncio.gather(*(keep_speaking(http, p.session_id, audio, until) for p in peers))
                speaking = await measure(server, args.seconds, work)
                sync = [(await http.get(f"/webrtc/sessions/{p.session_id}")).json() for p in peers]
            finally:
                for peer in peers:
                    await peer.close()
    skipped = sum(s["media"]["video_frames_skipped"] for s in sync)
    holds = sum(s["sync"]["audio_holds"] for s in sync)
    return {
        "sessions": count,
        "idle_cpu_percent_per_session": idle / count * 100,
        "speaking_cpu_percent_per_session": speaking / count * 100,
        "video_frames_skipped": skipped,
        "audio_holds": holds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--playback-fps", type=int, default=25)
    args = parser.parse_args()
    results = [asyncio.run(run_count(count, args)) for count in args.sessions]
    print_table(
        f"server CPU per session (% of one core): demo engine, 512x512, fps {args.fps}, "
        f"playback {args.playback_fps}, {args.seconds:g} s windows",
        ["sessions", "idle", "speaking", "video frames skipped", "audio holds"],
        [
            [r["sessions"], r["idle_cpu_percent_per_session"], r["speaking_cpu_percent_per_session"],
             r["video_frames_skipped"], r["audio_holds"]]
            for r in results
        ],
    )
    write_json("cpu", {"fps": args.fps, "playback_fps": args.playback_fps, "results": results})


if __name__ == "__main__":
    main()
