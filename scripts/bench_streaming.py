#!/usr/bin/env python3
"""Streamed speech in: first chunk sent to first speaking frame at a real aiortc receiver.

The server runs in its own process on loopback with the demo engine; an aiortc receiver
(tests/webrtc_client.py) records what arrives. Each trial speaks the same voice (bursts,
loud from its first sample), either streamed over `WS /webrtc/sessions/{id}/speech` as
PCM s16le at 24 kHz, at real time, in chunks of 20, 50 or 100 ms, or uploaded whole as
a WAV file to `/stream`. Figures, per way of sending:
- first chunk sent (or the upload request sent) -> arrival at the receiver of the first
  video frame with an open mouth, and of the first loud audio frame (the goal: <= 150 ms):
  when its last RTP packet is in, as a browser decodes a frame on its marker bit; and when
  aiortc's receiver hands it over, after its jitter buffer (which releases a video frame
  only when the next one's first packet arrives, a playback frame later, and holds audio
  back by 4 packets, 80 ms);
- sync: mouth edges minus sound edges on the sender's clock (RTCP sender reports, as a
  browser's lip sync sees them), every burst's opening and closing (the goal: +-40 ms);
- the session's input underruns (holds waiting for input) over the streamed trials.

    .venv/bin/python scripts/bench_streaming.py [--trials 6] [--fps 10] [--playback-fps 15]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx
import numpy as np

from benchkit import (
    figures, percentile, print_table, session_arguments, speech_edges, wait_for_event,
    watched_session, write_json,
)
from tests.audio_files import encode, speech_like
from tests.speech_streamer import SpeechStreamer, pcm_s16
from tests.webrtc_client import ClientPeer

RATE = 24_000
BURSTS = [(0.0, 0.4), (0.6, 1.0), (1.2, 1.6)]
SPEECH_SECONDS = 1.8
CHUNKS_MS = (20, 50, 100)
OPEN_MOUTH = 0.08
LOUD_RMS = 0.05
SETTLE_SECONDS = 0.4
FIRST_FRAME_GOAL_MS = 150.0
SYNC_GOAL_MS = 40.0


async def streamed_trial(url: str, peer: ClientPeer, sid: str, pcm: bytes, chunk_ms: int) -> dict:
    async with SpeechStreamer(url, sid) as streamer:
        await streamer.send_json({"type": "start", "format": "pcm_s16le", "sample_rate": RATE, "channels": 1})
        accepted = await streamer.wait_for("accepted", timeout=5)
        began = time.monotonic()
        await streamer.stream(pcm, chunk_ms / 1000, RATE * 2)
        await streamer.send_json({"type": "end"})
        await wait_for_event(peer, "speaking_ended", accepted["utterance_id"], timeout=10)
        started = await streamer.wait_for("speaking_started", timeout=1)
        first_sent = streamer.result.first_chunk_sent
    await asyncio.sleep(SETTLE_SECONDS)
    return {
        "way": f"stream {chunk_ms} ms",
        "began": began,
        "ended": time.monotonic(),
        "started_message_ms": (started["_received"] - first_sent) * 1000 if first_sent else None,
    }


async def file_trial(http: httpx.AsyncClient, peer: ClientPeer, sid: str, wav: bytes) -> dict:
    began = time.monotonic()
    response = await http.post(f"/webrtc/sessions/{sid}/stream", files={"audio_file": ("s.wav", wav, "audio/wav")})
    response.raise_for_status()
    await wait_for_event(peer, "speaking_ended", response.json()["utterance_id"], timeout=10)
    await asyncio.sleep(SETTLE_SECONDS)
    return {"way": "file upload", "began": began, "ended": time.monotonic()}


def measure(peer: ClientPeer, trials: list[dict]) -> None:
    received = peer.received
    found = speech_edges(peer, LOUD_RMS, OPEN_MOUTH)
    timeline = found["timeline"]
    sound_on, sound_off, mouth_on, mouth_off = (
        found["sound_on"], found["sound_off"], found["mouth_on"], found["mouth_off"]
    )
    for t in trials:
        video = next(v for v in received.video if v.arrival > t["began"] and v.mouth_dark > OPEN_MOUTH)
        audio = next(
            a for a in received.audio
            if a.arrival > t["began"] and float(np.sqrt(np.mean(np.square(a.samples)))) > LOUD_RMS
        )
        t["first_frame_ms"] = (video.packets_in - t["began"]) * 1000
        t["first_audio_ms"] = (audio.packets_in - t["began"]) * 1000
        t["first_frame_decoded_ms"] = (video.arrival - t["began"]) * 1000
        t["first_audio_decoded_ms"] = (audio.arrival - t["began"]) * 1000
        start = timeline.video_time(video.pts) - 0.5
        end = start + 0.5 + SPEECH_SECONDS + 0.5
        offsets = []
        for mouth_edges, sound_edges in ((mouth_on, sound_on), (mouth_off, sound_off)):
            heard = [s for s in sound_edges if start <= s <= end]
            seen = [m for m in mouth_edges if start <= m <= end + 0.2]
            for s in heard:
                nearest = min(seen, key=lambda m: abs(m - s), default=None)
                if nearest is not None:
                    offsets.append((nearest - s) * 1000)
        t["sync_offsets_ms"] = offsets


async def run(args: argparse.Namespace) -> dict:
    voice = speech_like(SPEECH_SECONDS, rate=RATE, bursts=BURSTS)
    pcm = pcm_s16(voice)
    wav = encode(voice, "wav", rate=RATE)
    async with watched_session(args.fps, args.playback_fps) as (server, http, sid, peer):
        trials = []
        for _ in range(args.trials):
            for chunk_ms in CHUNKS_MS:
                trials.append(await streamed_trial(server.url, peer, sid, pcm, chunk_ms))
            trials.append(await file_trial(http, peer, sid, wav))
        sync = (await http.get(f"/webrtc/sessions/{sid}")).json()["sync"]
    measure(peer, trials)
    return {"trials": trials, "sync": sync}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    session_arguments(parser, trials=6)
    args = parser.parse_args()
    data = asyncio.run(run(args))
    trials = data["trials"]
    ways = [f"stream {c} ms" for c in CHUNKS_MS] + ["file upload"]
    rows = []
    summary = {}
    for way in ways:
        mine = [t for t in trials if t["way"] == way]
        frame = figures([t["first_frame_ms"] for t in mine])
        audio = figures([t["first_audio_ms"] for t in mine])
        decoded = figures([t["first_frame_decoded_ms"] for t in mine])
        audio_decoded = figures([t["first_audio_decoded_ms"] for t in mine])
        offsets = [o for t in mine for o in t["sync_offsets_ms"]]
        sync = figures(offsets) if offsets else {}
        magnitudes = [abs(o) for o in offsets]
        worst = max(magnitudes, default=float("nan"))
        within = sum(m <= SYNC_GOAL_MS for m in magnitudes)
        summary[way] = {"first_frame_ms": frame, "first_audio_ms": audio,
                        "first_frame_decoded_by_aiortc_ms": decoded,
                        "first_audio_decoded_by_aiortc_ms": audio_decoded, "sync_offset_ms": sync,
                        "abs_sync_p95_ms": percentile(magnitudes, 95), "worst_sync_ms": worst,
                        "edges_within_goal": within, "edges": len(magnitudes)}
        rows.append([way, frame["p50"], frame["p95"], audio["p50"], audio["p95"],
                     decoded["p50"], audio_decoded["p50"],
                     sync.get("p50", float("nan")), percentile(magnitudes, 95), worst,
                     f"{within}/{len(magnitudes)}"])
    print_table(
        f"streamed speech: {args.trials} trials each, fps {args.fps}, playback {args.playback_fps}, "
        f"demo engine; goals: first frame <= {FIRST_FRAME_GOAL_MS:.0f} ms, sync +-{SYNC_GOAL_MS:.0f} ms",
        ["way", "frame p50", "frame p95", "audio p50", "audio p95", "aiortc frame p50",
         "aiortc audio p50", "sync p50", "|sync| p95",
         "|sync| max", "within"],
        rows,
    )
    print("frame, audio: the last RTP packet in (a browser decodes then); aiortc: after "
          "aiortc's jitter buffer (+1 playback frame video, +80 ms audio)")
    sync = data["sync"]
    print(f"\ninput underruns {sync['input_underruns']}, input wait {sync['input_wait_seconds']:.2f} s, "
          f"audio holds {sync['audio_holds']}, video frames late {sync['video_frames_late']}")
    name = f"streaming-fps{args.fps}-playback{args.playback_fps}"
    write_json(name, {"fps": args.fps, "playback_fps": args.playback_fps, "summary": summary, **data})


if __name__ == "__main__":
    main()
