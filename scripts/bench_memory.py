#!/usr/bin/env python3
"""Does memory come back? Server RSS and threads before, during and after sessions.

The server runs in its own process (demo engine). One session connects and ends first,
so that what is loaded once (the avatar, codec libraries) is in the baseline. Then, each
round, `--sessions` real aiortc clients connect on loopback at once, receive media for
`--seconds`, and end (client closed, session deleted); after `--settle` seconds the
server's RSS and thread count are read again from /proc.

    .venv/bin/python scripts/bench_memory.py [--sessions 20] [--seconds 2] [--rounds 2]
        [--env MALLOC_ARENA_MAX=2 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from pathlib import Path

import httpx

from benchkit import UNLIMITED_CAPACITY, print_table, server_process, write_json
from tests.webrtc_client import ClientPeer

SAMPLE_INTERVAL_SECONDS = 0.2
MIB = 1024 * 1024


def process_figures(pid: int) -> tuple[float, int]:
    """(RSS in MiB, threads) of process `pid`."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    rss_kib = int(fields["VmRSS"].split()[0])
    return rss_kib * 1024 / MIB, int(fields["Threads"])


def thread_names(pid: int) -> dict[str, int]:
    """How many threads of process `pid` have each name (glibc's comm, 15 characters)."""
    names: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            name = (task / "comm").read_text().strip()
            names[name] = names.get(name, 0) + 1
    return dict(sorted(names.items()))


async def one_session(http: httpx.AsyncClient, seconds: float) -> int:
    """Connect, receive for `seconds`, end the session; the video frames received."""
    sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
    peer = ClientPeer(http, sid)
    try:
        await peer.connect(timeout=60)
        await asyncio.sleep(seconds)
    finally:
        await peer.close()
        await http.delete(f"/webrtc/sessions/{sid}")
    return len(peer.received.video)


async def sample_peak(pid: int, stop: asyncio.Event) -> tuple[float, int]:
    peak_rss, peak_threads = 0.0, 0
    while not stop.is_set():
        rss, threads = process_figures(pid)
        peak_rss, peak_threads = max(peak_rss, rss), max(peak_threads, threads)
        await asyncio.sleep(SAMPLE_INTERVAL_SECONDS)
    return peak_rss, peak_threads


async def wait_for_no_sessions(http: httpx.AsyncClient, settle: float) -> None:
    deadline = time.monotonic() + 30
    while (await http.get("/health")).json()["sessions"] and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(settle)


async def run(args: argparse.Namespace) -> dict:
    env = dict(item.split("=", 1) for item in args.env)
    env = {**UNLIMITED_CAPACITY, **env}
    env.setdefault("MAX_SESSIONS", str(max(args.sessions, 16)))
    env.setdefault("RATE_LIMIT_CREATE_BURST", "0")
    with server_process(env) as server:
        pid = server.process.pid
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            fresh = process_figures(pid)
            await one_session(http, args.seconds)
            await wait_for_no_sessions(http, args.settle)
            before = process_figures(pid)
            before_names = thread_names(pid)
            rounds = []
            for number in range(1, args.rounds + 1):
                stop = asyncio.Event()
                sampler = asyncio.create_task(sample_peak(pid, stop))
                frames = await asyncio.gather(
                    *(one_session(http, args.seconds) for _ in range(args.sessions))
                )
                stop.set()
                peak = await sampler
                await wait_for_no_sessions(http, args.settle)
                after = process_figures(pid)
                rounds.append(
                    {
                        "round": number,
                        "peak_rss_mib": round(peak[0], 1),
                        "peak_threads": peak[1],
                        "after_rss_mib": round(after[0], 1),
                        "after_threads": after[1],
                        "after_thread_names": thread_names(pid),
                        "after_vs_before_percent": round((after[0] / before[0] - 1) * 100, 1),
                        "min_video_frames_per_session": min(frames),
                        "median_video_frames_per_session": statistics.median(frames),
                    }
                )
    return {
        "sessions": args.sessions,
        "seconds": args.seconds,
        "env": env,
        "fresh_rss_mib": round(fresh[0], 1),
        "fresh_threads": fresh[1],
        "before_rss_mib": round(before[0], 1),
        "before_threads": before[1],
        "before_thread_names": before_names,
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0, help="media received per session")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settle", type=float, default=3.0, help="wait after the sessions end")
    parser.add_argument("--env", nargs="*", default=[], metavar="NAME=VALUE",
                        help="extra environment of the server process")
    parser.add_argument("--name", default="memory", help="bench-results/<name>.json")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print_table(
        f"server memory: {args.sessions} sessions at once, {args.seconds:g} s of media each; "
        f"before = after one warm-up session (fresh start: {result['fresh_rss_mib']} MiB, "
        f"{result['fresh_threads']} threads)",
        ["round", "before MiB", "peak MiB", "after MiB", "after vs before", "threads before",
         "peak", "after", "video frames min/median"],
        [
            [r["round"], result["before_rss_mib"], r["peak_rss_mib"], r["after_rss_mib"],
             f"{r['after_vs_before_percent']:+.1f}%", result["before_threads"], r["peak_threads"],
             r["after_threads"],
             f"{r['min_video_frames_per_session']}/{r['median_video_frames_per_session']:g}"]
            for r in result["rounds"]
        ],
    )
    write_json(args.name, result)


if __name__ == "__main__":
    main()
