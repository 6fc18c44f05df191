#!/usr/bin/env python3
"""Overload: more sessions than the server's capacity try to create and speak at once.

The server runs in its own process with its default, calibrated capacity (MAX_SESSIONS
unset: the sessions that can all speak at once at the default parameters). The benchmark
asks for `--extra` sessions more than it says it takes, spread over receiver processes
(scripts/sessionload.py), and makes every admitted one speak the same utterance at the
same instant. It prints and writes (bench-results/overload.json) how many were admitted,
how many refused (status, Retry-After, reason), and the admitted ones' figures: video fps,
longest freeze, time to first speech, audio rate; and whether real time held for them.

The receivers decode every stream, as costly as serving it: on a small box they would take
the server's CPU from it. So the server runs on its own cores (`--server-cores`, default
half the machine's; its capacity is calibrated for those, through its CPU affinity) and the
receivers on the others.

    .venv/bin/python scripts/bench_overload.py --extra 4 --seconds 4
    .venv/bin/python scripts/bench_overload.py --fps 25 --playback-fps 25
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import benchkit
from sessionload import speak_together
from tests.audio_files import encode, speech_like


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extra", type=int, default=4, help="sessions beyond the server's limit")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the utterance")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--playback-fps", type=int, default=15)
    parser.add_argument("--processes", type=int, default=2, help="receiver processes")
    parser.add_argument(
        "--server-cores", type=int, default=0,
        help="cores the server may run on (default: half of this process's, at least 1)",
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE",
        help="a server setting (e.g. CAPACITY_IDLE_ENCODE_SHARE=0.1); repeatable",
    )
    args = parser.parse_args()
    # Every admitted session uploads at once: more decode slots than sessions, so that the
    # speech refused is refused for capacity, not for DECODE_MAX_IN_FLIGHT.
    env = {"DECODE_MAX_IN_FLIGHT": "64", **dict(item.split("=", 1) for item in args.env)}
    params = {"fps": args.fps, "playback_fps": args.playback_fps}

    cores = sorted(os.sched_getaffinity(0))
    share = args.server_cores or max(1, len(cores) // 2)
    server_cores, receiver_cores = cores[:share], cores[share:] or cores
    os.sched_setaffinity(0, server_cores)  # the server (and its workers) inherit it
    with tempfile.TemporaryDirectory() as folder, benchkit.server_process(env) as server:
        os.sched_setaffinity(0, receiver_cores)  # the receivers inherit this one
        audio_file = Path(folder) / "speech.wav"
        audio_file.write_bytes(encode(speech_like(args.seconds, bursts=[(0.0, args.seconds)]), "wav"))
        before = httpx.get(f"{server.url}/health", timeout=10).json()
        limit = before["max_sessions"]
        count = limit + args.extra
        cpu, wall = server.cpu_seconds(), time.monotonic()
        result = asyncio.run(
            speak_together(server.url, count, args.processes, params, audio_file, args.seconds)
        )
        # What the server used (connecting and speaking): to hold against its budget.
        server_cores_used = (server.cpu_seconds() - cpu) / (time.monotonic() - wall)
        after = httpx.get(f"{server.url}/health", timeout=10).json()

    refused = [f for f in result.figures if "refused" in f]
    admitted = [f for f in result.figures if f.get("stage") != "create"]
    spoke = [f for f in result.figures if f.get("spoke")]
    summary = result.summary(args.fps)
    problems = [p for p in summary["problems"] if "refused" not in p]
    if len(spoke) < len(admitted):
        problems.append(f"{len(admitted) - len(spoke)} admitted sessions did not finish speaking")
    real_time = bool(spoke) and not problems
    by_kind = collections.Counter(
        (f["stage"], f["status"], f.get("reason") or f["refused"][:60], f.get("retry_after"))
        for f in refused
    )
    capacity = before["capacity"]
    print(
        f"\nserver: {capacity['source']} capacity on {capacity['cores']} cores: render "
        f"{capacity['render_ms_per_frame']} ms/frame ({capacity['render_budget_fps']} frames/s), "
        f"convert + VP8 {capacity['encode_ms_per_frame']} ms/frame "
        f"({capacity['encode_budget_fps']} frames/s), max_sessions {limit}; it used "
        f"{server_cores_used:.2f} cores on average over the run (budget: "
        f"{capacity['cores'] * capacity['headroom']:.2f})"
    )
    benchkit.print_table(
        f"{count} sessions asked for at fps {args.fps} / playback {args.playback_fps}",
        ["asked", "admitted", "spoke", "refused", "real time (admitted)", "problems"],
        [[count, len(admitted), len(spoke), len(refused), real_time, "; ".join(problems) or "-"]],
    )
    benchkit.print_table(
        "refusals",
        ["stage", "status", "reason", "Retry-After", "count"],
        [[*kind, n] for kind, n in sorted(by_kind.items(), key=str)],
    )
    benchkit.print_table(
        "the admitted sessions' speech",
        ["min video fps", "max freeze ms", "first speech p50 ms", "p95 ms", "min audio x real time",
         "late frames", "audio holds"],
        [[summary["min_video_fps"], summary["max_freeze_ms"] or 0.0,
          summary["first_speech_p50_ms"] or 0.0, summary["first_speech_p95_ms"] or 0.0,
          round(summary["min_audio_real_time"], 3), summary["video_frames_late"],
          summary["audio_holds"]]],
    )
    data: dict[str, Any] = {
        "params": {**params, "utterance_seconds": args.seconds, "env": env,
                   "server_cores": server_cores, "receiver_cores": receiver_cores},
        "capacity_before": capacity,
        "capacity_after": after["capacity"],
        "max_sessions": limit,
        "server_cores_used": round(server_cores_used, 3),
        "asked": count,
        "admitted": len(admitted),
        "spoke": len(spoke),
        "refused": [
            {"stage": s, "status": st, "reason": r, "retry_after": ra, "count": n}
            for (s, st, r, ra), n in by_kind.items()
        ],
        "admitted_real_time": real_time,
        "admitted_problems": problems,
        "admitted_figures": summary,
        "sessions": result.figures,
        "error": result.error,
    }
    benchkit.write_json("overload", data)


if __name__ == "__main__":
    main()
