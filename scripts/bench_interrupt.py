#!/usr/bin/env python3
"""Interrupt latency at a real aiortc receiver: request to the last speaking audio sample.

The server runs in its own process on loopback with the demo engine. For each trial the
client uploads continuous voice, waits a random while after it starts playing, and POSTs
`/interrupt`; after all trials the received audio is put on the sender's clock through
the RTCP sender reports (as a browser's lip sync does) and, per trial, the last sample
louder than the threshold is found. The figures, from the instant the client sends the
request (its `time.time()`; the server is on the same machine):
- to the last speaking sample on the sender's clock (the goal: <= 100 ms);
- to the arrival at the receiver of the audio frame holding it;
- to the response to the request.

    .venv/bin/python scripts/bench_interrupt.py [--trials 15] [--fps 10] [--playback-fps 15]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import httpx

from benchkit import figures, print_table, session_arguments, wait_for_event, watched_session, write_json
from tests.audio_files import encode, speech_like
from tests.webrtc_client import AUDIO_RATE, ClientPeer, SenderTimeline, last_loud_sample

SPEECH_SECONDS = 3.0
CUT_AFTER_SECONDS = (0.4, 1.6)  # a random point of the speech, after it started
SETTLE_SECONDS = 0.6
THRESHOLD = 0.05
GOAL_MS = 100.0


async def trial(http: httpx.AsyncClient, peer: ClientPeer, sid: str, audio: bytes, rng: random.Random) -> dict:
    response = await http.post(f"/webrtc/sessions/{sid}/stream", files={"audio_file": ("s.wav", audio, "audio/wav")})
    response.raise_for_status()
    utterance_id = response.json()["utterance_id"]
    await wait_for_event(peer, "speaking_started", utterance_id, timeout=5)
    await asyncio.sleep(rng.uniform(*CUT_AFTER_SECONDS))
    requested_wall, requested = time.time(), time.monotonic()
    response = await http.post(f"/webrtc/sessions/{sid}/interrupt")
    answered = time.monotonic()
    response.raise_for_status()
    cut = response.json()["interrupted"]
    if cut is None or cut["utterance_id"] != utterance_id:
        raise RuntimeError(f"the interrupt cut {cut}, not {utterance_id}")
    await asyncio.sleep(SETTLE_SECONDS)
    return {
        "requested_wall": requested_wall,
        "requested": requested,
        "response_ms": (answered - requested) * 1000,
        "played_seconds": cut["played_seconds"],
    }


def measure(peer: ClientPeer, trials: list[dict]) -> None:
    """Fill in each trial's receiver figures, once the sender reports are in."""
    received = peer.received
    timeline = SenderTimeline(received)
    for t in trials:
        cut = timeline.sender_time(t["requested_wall"])
        last = last_loud_sample(received, timeline, cut - 2.0, cut + SETTLE_SECONDS, THRESHOLD)
        if last is None:
            raise RuntimeError("no speech before an interrupt")
        t["last_sample_ms"] = (last - cut) * 1000
        holding = next(
            a for a in received.audio
            if timeline.audio_time(a.pts) <= last < timeline.audio_time(a.pts) + len(a.samples) / AUDIO_RATE
        )
        t["last_arrival_ms"] = (holding.arrival - t["requested"]) * 1000


async def run(args: argparse.Namespace) -> dict:
    rng = random.Random(args.seed)
    audio = encode(speech_like(SPEECH_SECONDS, bursts=[(0.0, SPEECH_SECONDS)]), "wav")
    async with watched_session(args.fps, args.playback_fps) as (server, http, sid, peer):
        trials = []
        for _ in range(args.trials):
            trials.append(await trial(http, peer, sid, audio, rng))
        sync = (await http.get(f"/webrtc/sessions/{sid}")).json()["sync"]
    measure(peer, trials)
    return {"trials": trials, "sync": sync}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    session_arguments(parser, trials=15)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    data = asyncio.run(run(args))
    trials = data["trials"]
    rows = []
    summary = {}
    for key, label in [
        ("last_sample_ms", "request -> last speaking sample (sender clock)"),
        ("last_arrival_ms", "request -> arrival of that audio frame"),
        ("response_ms", "request -> response"),
    ]:
        found = figures([t[key] for t in trials])
        summary[key] = found
        rows.append([label, found["p50"], found["p95"], found["min"], found["max"]])
    print_table(
        f"interrupt latency: {len(trials)} trials, fps {args.fps}, playback {args.playback_fps}, "
        f"demo engine, goal <= {GOAL_MS:.0f} ms",
        ["figure (ms)", "p50", "p95", "min", "max"],
        rows,
    )
    within = sum(t["last_sample_ms"] <= GOAL_MS for t in trials)
    print(f"\n{within}/{len(trials)} trials within the {GOAL_MS:.0f} ms goal")
    name = f"interrupt-fps{args.fps}-playback{args.playback_fps}"
    write_json(name, {"fps": args.fps, "playback_fps": args.playback_fps, "goal_ms": GOAL_MS, "summary": summary, **data})


if __name__ == "__main__":
    main()
