#!/usr/bin/env python3
"""Speech start latency and lip-sync offset, as a real aiortc client receives them.

The server runs in its own process on loopback with the demo engine; for each trial the
client uploads speech whose first syllable starts at its first sample and measures:
- the time from the end of the upload request (its response) to the first speaking
  video frame the client decodes (and from the start of the request, for reference);
- the offset of each mouth opening from its sound, both mapped to the sender's clock
  through the RTCP sender reports, the way a browser's lip sync sees them.

    .venv/bin/python scripts/bench_latency.py [--trials 10] [--fps 10] [--playback-fps 15]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx

from benchkit import median, print_table, session_arguments, speech_edges, watched_session, write_json
from tests.audio_files import encode, speech_like
from tests.webrtc_client import ClientPeer

BURSTS = [(0.0, 0.6), (0.8, 1.4), (1.6, 2.0)]
SECONDS = 2.2
OPEN_MOUTH = 0.08
LOUD_RMS = 0.05


async def trial(http: httpx.AsyncClient, peer: ClientPeer, sid: str, audio: bytes) -> dict[str, float]:
    peer.received.events.clear()
    first_frame = len(peer.received.video)
    started = time.monotonic()
    response = await http.post(f"/webrtc/sessions/{sid}/stream", files={"audio_file": ("s.wav", audio, "audio/wav")})
    answered = time.monotonic()
    response.raise_for_status()
    await peer.wait_for_event("speaking_ended", timeout=SECONDS + 10)
    await asyncio.sleep(0.4)
    speaking = next(
        v for v in peer.received.video[first_frame:] if v.arrival > started and v.mouth_dark > OPEN_MOUTH
    )
    return {
        "from_response_ms": (speaking.arrival - answered) * 1000,
        "from_request_ms": (speaking.arrival - started) * 1000,
        "request_ms": (answered - started) * 1000,
    }


def offsets(peer: ClientPeer) -> list[float]:
    """Mouth onset minus sound onset (and closing minus silence), ms, each burst."""
    found = speech_edges(peer, LOUD_RMS, OPEN_MOUTH)
    sound_on, sound_off, mouth_on, mouth_off = (
        found["sound_on"], found["sound_off"], found["mouth_on"], found["mouth_off"]
    )
    if len(mouth_on) != len(sound_on):
        raise RuntimeError(f"{len(mouth_on)} mouth openings for {len(sound_on)} sounds")
    pairs = list(zip(mouth_on, sound_on)) + list(zip(mouth_off, sound_off))
    return [(video - audio) * 1000 for video, audio in pairs]


async def run(args: argparse.Namespace) -> dict:
    audio = encode(speech_like(SECONDS, bursts=BURSTS), "wav")
    async with watched_session(args.fps, args.playback_fps, settle_seconds=1.5) as (_, http, sid, peer):
        results = []
        for _ in range(args.trials):
            results.append(await trial(http, peer, sid, audio))
            await asyncio.sleep(0.5)
        sync = (await http.get(f"/webrtc/sessions/{sid}")).json()["sync"]
    return {"trials": results, "av_offsets_ms": offsets(peer), "sync": sync}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    session_arguments(parser, trials=10)
    args = parser.parse_args()
    data = asyncio.run(run(args))
    trials = data["trials"]
    av = data["av_offsets_ms"]
    rows = [
        ["upload response -> first speaking frame", median([t["from_response_ms"] for t in trials]),
         min(t["from_response_ms"] for t in trials), max(t["from_response_ms"] for t in trials)],
        ["upload request start -> first speaking frame", median([t["from_request_ms"] for t in trials]),
         min(t["from_request_ms"] for t in trials), max(t["from_request_ms"] for t in trials)],
        ["upload request (send + decode)", median([t["request_ms"] for t in trials]),
         min(t["request_ms"] for t in trials), max(t["request_ms"] for t in trials)],
        ["A/V offset, mouth - sound (signed)", median(av), min(av), max(av)],
        ["|A/V offset|", median([abs(v) for v in av]), min(abs(v) for v in av), max(abs(v) for v in av)],
    ]
    print_table(
        f"speech latency and lip sync: {args.trials} trials, fps {args.fps}, playback {args.playback_fps}, "
        "prebuffer 0.2 s, demo engine",
        ["figure (ms)", "median", "min", "max"],
        rows,
    )
    name = f"latency-fps{args.fps}-playback{args.playback_fps}"
    write_json(name, {"fps": args.fps, "playback_fps": args.playback_fps, **data})


if __name__ == "__main__":
    main()
