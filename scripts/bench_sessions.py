#!/usr/bin/env python3
"""N sessions speaking at once on the CPU (demo engine), and what an idle session costs.

The server runs in its own process (`benchkit.server_process`); the sessions are received
by aiortc peers in other processes (`sessionload.speak_together`). For each setting (the
seed's defaults: fps 10, playback 15, batch 2, chunk 2 s; and fps 25 / playback 25) and
each N of `--counts`, N sessions all speak an 8 s utterance together, and the table gives
per N: the lowest video rate a session received during its speech, the longest freeze,
lip sync of the first session and the worst of all, time to first speech (p95), the audio
received against real time (lowest), and the server's late frames and audio holds.

Then the idle cost: `--idle-sessions` connected sessions that only listen, for
`--idle-seconds`; the server process's CPU time over that span (from /proc), per session,
as a share of one core.

    scripts/bench_sessions.py                    # counts 1,4,8,12,14, both settings
    scripts/bench_sessions.py --counts 1,4 --settings seed --idle-seconds 10   # a short check

Prints the tables and writes bench-results/sessions.json.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchkit import CLOCK_TICKS, UNLIMITED_CAPACITY, ServerProcess, print_table, server_process, write_json
from sessionload import ArrivalPeer, speak_together
from tests.audio_files import encode, speech_like

SETTINGS = {
    "seed": {"fps": 10, "playback_fps": 15, "batch_size": 2, "chunk_duration": 2},
    "fps25": {"fps": 25, "playback_fps": 25, "batch_size": 2, "chunk_duration": 2},
}
UTTERANCE_SECONDS = 8.0
WARM_UP_SECONDS = 1.0
SETTLE_SECONDS = 2.0
"""Between steps: the last step's sessions are gone and the loop is quiet again."""
IDLE_JOIN_SECONDS = 5.0
"""Idle sessions connect, and join the shared idle loop, before their cost is measured."""
RECEIVER_PROCESSES = 2


def loop_cpu_seconds(server: ServerProcess) -> float:
    """CPU time of the server's main thread, the one running its event loop."""
    pid = server.process.pid
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def parse_counts(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


async def run_setting(server: ServerProcess, name: str, counts: list[int], audio: Path, short: Path) -> dict[str, Any]:
    params = {"avatar_id": "demo", **SETTINGS[name], "sync": True}
    fps = SETTINGS[name]["fps"]
    warm = await speak_together(server.url, 1, 1, params, short, WARM_UP_SECONDS)
    steps = [{"warm_up": warm.summary(fps)}]
    for count in counts:
        await asyncio.sleep(SETTLE_SECONDS)
        started = time.monotonic()
        cpu, loop_cpu = server.cpu_seconds(), loop_cpu_seconds(server)
        outcome = await speak_together(
            server.url, count, min(RECEIVER_PROCESSES, count), params, audio, UTTERANCE_SECONDS
        )
        elapsed = time.monotonic() - started
        step = outcome.summary(fps)
        step["server_cpu_share"] = (server.cpu_seconds() - cpu) / elapsed
        step["loop_cpu_share"] = (loop_cpu_seconds(server) - loop_cpu) / elapsed
        steps.append(step)
        print(
            f"  {name} {count:3} sessions: {'real time' if step['real_time'] else 'BROKEN'} "
            f"{'; '.join(step['problems'])}",
            flush=True,
        )
    return {"params": SETTINGS[name], "steps": steps[1:], "warm_up": steps[0]["warm_up"]}


async def idle_cost(server: ServerProcess, sessions: int, seconds: float) -> dict[str, Any]:
    """CPU share of one core the server spends per connected idle session."""
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        await asyncio.sleep(SETTLE_SECONDS)
        before, loop_before = server.cpu_seconds(), loop_cpu_seconds(server)
        started = time.monotonic()
        await asyncio.sleep(seconds)
        baseline = (server.cpu_seconds() - before) / (time.monotonic() - started)
        loop_baseline = (loop_cpu_seconds(server) - loop_before) / (time.monotonic() - started)
        peers: list[ArrivalPeer] = []
        try:
            for _ in range(sessions):
                response = await http.post("/webrtc/sessions/create", params={"avatar_id": "demo", **SETTINGS["seed"]})
                response.raise_for_status()
                peers.append(ArrivalPeer(http, response.json()["session_id"]))
            await asyncio.gather(*(peer.connect() for peer in peers))
            await asyncio.sleep(IDLE_JOIN_SECONDS)
            before, loop_before = server.cpu_seconds(), loop_cpu_seconds(server)
            started = time.monotonic()
            await asyncio.sleep(seconds)
            elapsed = time.monotonic() - started
            loaded = (server.cpu_seconds() - before) / elapsed
            loop_loaded = (loop_cpu_seconds(server) - loop_before) / elapsed
            shared = []
            for peer in peers:
                media = (await http.get(f"/webrtc/sessions/{peer.session_id}")).json()["media"]
                shared.append(media.get("video_frames_shared", 0) / max(1, media["video_frames_sent"]))
        finally:
            for peer in peers:
                await peer.close()
                await http.delete(f"/webrtc/sessions/{peer.session_id}")
    return {
        "sessions": sessions,
        "seconds": seconds,
        "server_cpu_share_without": baseline,
        "server_cpu_share_with": loaded,
        "cpu_share_per_idle_session": (loaded - baseline) / sessions,
        "loop_cpu_share_per_idle_session": (loop_loaded - loop_baseline) / sessions,
        "loop_ms_per_frame_sent": (loop_loaded - loop_baseline) / sessions / SETTINGS["seed"]["playback_fps"] * 1000,
        "frames_from_shared_loop": min(shared, default=0.0),
    }


def print_results(results: dict[str, Any]) -> None:
    for name, setting in results["settings"].items():
        p = setting["params"]
        print_table(
            f"{name}: fps {p['fps']}, playback {p['playback_fps']}, batch {p['batch_size']}, "
            f"chunk {p['chunk_duration']} s, {UTTERANCE_SECONDS:g} s utterance",
            ["N", "real time", "video fps min", "longest freeze ms", "sync s0 ms", "sync worst ms",
             "first speech p95 ms", "audio x real time", "late frames", "audio holds",
             "video held", "server CPU", "loop CPU"],
            [
                [s["sessions"], "yes" if s["real_time"] else "no", s["min_video_fps"],
                 s["max_freeze_ms"] if s["max_freeze_ms"] is not None else "-",
                 "-" if s["sync_ms_first"] is None else f"{s['sync_ms_first']:.0f}",
                 "-" if s["sync_ms_worst"] is None else f"{s['sync_ms_worst']:.0f}",
                 "-" if s["first_speech_p95_ms"] is None else f"{s['first_speech_p95_ms']:.0f}",
                 f"{s['min_audio_real_time']:.2f}", s["video_frames_late"], s["audio_holds"],
                 s["video_frames_held"], f"{s['server_cpu_share']:.0%}", f"{s['loop_cpu_share']:.0%}"]
                for s in setting["steps"]
            ],
        )
    idle = results.get("idle")
    if idle:
        print_table(
            f"idle: {idle['sessions']} connected sessions listening for {idle['seconds']:g} s (seed settings)",
            ["server CPU without", "with", "per idle session", "of it, event loop", "loop ms per frame sent",
             "frames from the shared loop"],
            [[f"{idle['server_cpu_share_without']:.1%}", f"{idle['server_cpu_share_with']:.1%}",
              f"{idle['cpu_share_per_idle_session']:.1%}", f"{idle['loop_cpu_share_per_idle_session']:.1%}",
              f"{idle['loop_ms_per_frame_sent']:.2f}", f"{idle['frames_from_shared_loop']:.0%}"]],
        )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    counts = parse_counts(args.counts)
    results: dict[str, Any] = {"counts": counts, "utterance_seconds": UTTERANCE_SECONDS, "settings": {}}
    with tempfile.TemporaryDirectory(prefix="bench-sessions-") as folder:
        audio = Path(folder) / "speech.wav"
        audio.write_bytes(encode(speech_like(UTTERANCE_SECONDS), "wav"))
        short = Path(folder) / "short.wav"
        short.write_bytes(encode(speech_like(WARM_UP_SECONDS), "wav"))
        env = {  # admission control out of the way: this measures where real time breaks
            "LIPSYNC_ENGINE": "demo", "MAX_SESSIONS": str(max(counts + [args.idle_sessions]) + 2),
            **UNLIMITED_CAPACITY,
        }
        with server_process(env) as server:
            for name in filter(None, args.settings.split(",")):
                results["settings"][name] = await run_setting(server, name, counts, audio, short)
            if args.idle_sessions > 0 and args.idle_seconds > 0:
                results["idle"] = await idle_cost(server, args.idle_sessions, args.idle_seconds)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1,4,8,12,14", help="session counts, comma-separated")
    parser.add_argument("--settings", default="seed,fps25", help=f"of {', '.join(SETTINGS)}, comma-separated")
    parser.add_argument("--idle-sessions", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    print_results(results)
    write_json("sessions", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
