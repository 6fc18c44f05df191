#!/usr/bin/env python3
"""Where the server's CPU goes per stage, with N sessions speaking (py-spy, a dev tool).

Starts the server (demo engine) in its own process, N sessions speaking an utterance
together (`sessionload.speak_together`), and samples the server with `py-spy record`
(`pip install py-spy`; not a dependency of the server) while they speak. Prints, per stage
(frame conversion, VP8, Opus, packetization, SRTP, socket send, track pacing and playout,
rendering, the event loop's own work), the share of one core and the cost per video frame
sent, and writes bench-results/profile.json.

    scripts/profile_sessions.py --sessions 4 --fps 25 --playback-fps 25
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchkit import UNLIMITED_CAPACITY, print_table, server_process, write_json
from sessionload import speak_together
from tests.audio_files import encode, speech_like

SAMPLE_RATE = 200  # py-spy samples per second
# Stage: substrings of a sampled stack's frames; the first stage (in this order) whose
# pattern is in a stack gets that sample.
STAGES = [
    ("rgb→yuv conversion", ("to_yuv420p", "reformat")),
    ("VP8 encode", ("video_encoder.py", "vpx.py:encode", "encode (aiortc/codecs/vpx.py")),
    ("Opus encode", ("codecs/opus.py", "audio_encoder.py")),
    ("render (demo engine)", ("server/lipsync/",)),
    ("packetize (VP8 payloads, RTP header)", ("_packetize", "codecs/vpx.py", "rtp.py")),
    ("SRTP protect", ("protect",)),
    ("socket send (ICE, UDP)", ("aioice", "sendto", "_send (")),
    ("RTCP", ("_run_rtcp", "_handle_rtcp")),
    ("track pacing, playout, packet copies", ("server/media/",)),
    ("other server code", ("server/",)),
    ("aiortc other", ("aiortc",)),
    ("event loop, other", ("",)),
]


# Leaf frames of a thread that waits (the event loop's select, an idle pool thread).
WAITING = ("select (selectors.py", "wait (threading.py", "_worker (concurrent/futures/thread.py", "get (queue.py")


def classify(stack: str) -> str:
    for name, patterns in STAGES:
        if any(p in stack for p in patterns):
            return name
    return STAGES[-1][0]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    params = {"avatar_id": "demo", "fps": args.fps, "playback_fps": args.playback_fps, "batch_size": 2, "chunk_duration": 2}
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    with tempfile.TemporaryDirectory(prefix="profile-") as folder:
        audio = Path(folder) / "speech.wav"
        audio.write_bytes(encode(speech_like(args.seconds), "wav"))
        raw = Path(folder) / "stacks.txt"
        with server_process(
            {"LIPSYNC_ENGINE": "demo", "MAX_SESSIONS": str(args.sessions + 2), **UNLIMITED_CAPACITY}
        ) as server:
            await speak_together(server.url, 1, 1, params, audio, args.seconds)  # warm up
            record = subprocess.Popen(
                [spy, "record", "--pid", str(server.process.pid), "--rate", str(SAMPLE_RATE), "--format", "raw",
                 "--threads", "--nonblocking", "--duration", str(int(args.seconds)), "--output", str(raw)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            started = time.monotonic()
            cpu = server.cpu_seconds()
            outcome = await speak_together(
                server.url, args.sessions, min(2, args.sessions), {**params}, audio, args.seconds
            )
            record.wait(30)
            elapsed = time.monotonic() - started
            cpu_share = (server.cpu_seconds() - cpu) / elapsed
        samples: collections.Counter[str] = collections.Counter()
        leaves: collections.Counter[str] = collections.Counter()
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit() or any(w in stack.rsplit(";", 1)[-1] for w in WAITING):
                continue
            samples[classify(stack)] += int(count)
            leaves[stack.rsplit(";", 1)[-1]] += int(count)
    total = sum(samples.values()) or 1
    frames_per_second = args.sessions * args.playback_fps
    stages = {
        name: {  # the measured CPU time, shared out as the samples fall
            "core_share": samples[name] / total * cpu_share,
            "ms_per_video_frame": samples[name] / total * cpu_share / frames_per_second * 1000,
            "share_of_samples": samples[name] / total,
        }
        for name, _ in STAGES
    }
    return {
        "sessions": args.sessions, "fps": args.fps, "playback_fps": args.playback_fps,
        "server_cpu_share": cpu_share, "stages": stages, "load": outcome.summary(args.fps),
        "top_leaves": leaves.most_common(25),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--playback-fps", type=int, default=25)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    print_table(
        f"{args.sessions} sessions speaking, fps {args.fps} / playback {args.playback_fps}: "
        f"server {results['server_cpu_share']:.0%} of a core",
        ["stage", "share of a core", "ms per video frame sent"],
        [[name, f"{s['core_share']:.1%}", f"{s['ms_per_video_frame']:.2f}"] for name, s in results["stages"].items()],
    )
    write_json("profile", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
