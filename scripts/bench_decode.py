#!/usr/bin/env python3
"""Isolated decoding: its added latency, and the server's memory under decompression bombs.

1. Latency: a 5 s mp3 decoded to 48 kHz mono, in-process on a thread (as uploads were
   before isolation) and in a decode worker process (`DecodePool`, as uploads are now),
   alternating which goes first; p50 and p95 of each, and of what isolation adds: the
   isolated call's wall time less the decode's own, timed inside the worker (sending the
   file and the samples, waking the worker). On a loaded machine the first two also
   carry the load's noise; the third is the cost of isolation itself.
2. Memory: a server (its own process, default settings) with 8 connected sessions gets 8
   bombs at once, one per session: rate bombs (118 s of 384 kHz stereo FLAC, ~30 KB) and
   length bombs (FLAC of 192 kHz stereo silence that declares no length, decoded until the
   120 s limit). The RSS of the server and of its decode workers is sampled throughout.

    .venv/bin/python scripts/bench_decode.py [--repeats 40] [--sessions 8]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import httpx

from benchkit import print_table, server_process, write_json
from server.isolation.pool import DecodeLimits, DecodePool
from server.media.audio_input import decode_audio
from server.settings import Settings
from tests.audio_files import encode, speech_like
from tests.hostile_audio import encoded, without_flac_length
from tests.webrtc_client import ClientPeer

MP3_SECONDS = 5.0
MIB = 1024 * 1024
SAMPLE_EVERY_SECONDS = 0.05
PAGE = 4096


def timed_decode(*args: object) -> float:
    """Milliseconds `decode_audio(*args)` takes where it runs (in the worker)."""
    started = time.perf_counter()
    decode_audio(*args)  # type: ignore[arg-type]
    return (time.perf_counter() - started) * 1000


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def latency(repeats: int) -> dict:
    settings = Settings()
    data = encode(speech_like(MP3_SECONDS), "mp3")
    pool = DecodePool(
        "bench-decode",
        settings.decode_workers,
        DecodeLimits(
            settings.decode_max_memory_bytes, settings.decode_cpu_seconds, settings.decode_timeout_seconds
        ),
        settings.decode_max_in_flight,
    )
    await asyncio.to_thread(pool.start)
    args = (data, settings.max_audio_seconds, settings.decode_max_sample_rate, settings.decode_max_channels)
    inline, isolated, added = [], [], []

    async def in_process() -> None:
        started = time.perf_counter()
        await asyncio.to_thread(decode_audio, *args)
        inline.append((time.perf_counter() - started) * 1000)

    async def in_worker() -> None:
        started = time.perf_counter()
        inside = await pool.run(timed_decode, *args)
        isolated.append((time.perf_counter() - started) * 1000)
        added.append(isolated[-1] - inside)

    try:
        for _ in range(3):  # warm both paths
            await asyncio.to_thread(decode_audio, *args)
            await pool.run(decode_audio, *args)
        for i in range(repeats):
            for path in (in_process, in_worker) if i % 2 == 0 else (in_worker, in_process):
                await path()
    finally:
        pool.close()
    return {
        "audio": f"{MP3_SECONDS:g} s mp3, {len(data)} bytes",
        "repeats": repeats,
        "in_process_ms": {"p50": statistics.median(inline), "p95": percentile(inline, 0.95)},
        "isolated_ms": {"p50": statistics.median(isolated), "p95": percentile(isolated, 0.95)},
        "added_ms": {"p50": statistics.median(added), "p95": percentile(added, 0.95)},
    }


def family(pid: int) -> list[int]:
    """`pid` and all its descendants (the decode workers are the forkserver's children)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError):
        return 0


async def sample(pid: int, samples: list[tuple[int, int]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        members = family(pid)
        samples.append((rss(pid), sum(rss(p) for p in members if p != pid)))
        await asyncio.sleep(SAMPLE_EVERY_SECONDS)


async def bombs(sessions: int) -> dict:
    rate_bomb = encoded(118.0, 384_000, "stereo", silent=True)
    length_bomb = without_flac_length(encoded(150.0, 192_000, "stereo", silent=True))
    kinds = [("rate bomb", rate_bomb), ("length bomb", length_bomb)]
    with server_process() as server:
        pid = server.process.pid
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
            peers = []
            for _ in range(sessions):
                sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
                peer = ClientPeer(http, sid)
                await peer.connect()
                peers.append(peer)
            try:
                await asyncio.sleep(2.0)
                before = [(rss(pid), sum(rss(p) for p in family(pid) if p != pid))]
                samples: list[tuple[int, int]] = []
                stop = asyncio.Event()
                sampler = asyncio.create_task(sample(pid, samples, stop))
                started = time.monotonic()
                uploads = [
                    http.post(
                        f"/webrtc/sessions/{peer.session_id}/stream",
                        files={"audio_file": (f"{kinds[i % 2][0]}.flac", kinds[i % 2][1], "audio/flac")},
                    )
                    for i, peer in enumerate(peers)
                ]
                responses = await asyncio.gather(*uploads)
                seconds = time.monotonic() - started
                await asyncio.sleep(1.0)
                stop.set()
                await sampler
                alive = (await http.get("/health")).status_code == 200
            finally:
                for peer in peers:
                    await peer.close()
    outcomes: dict[str, dict[int, int]] = {}
    for i, response in enumerate(responses):
        counts = outcomes.setdefault(kinds[i % 2][0], {})
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
    return {
        "sessions": sessions,
        "bomb_bytes": {"rate bomb": len(rate_bomb), "length bomb": len(length_bomb)},
        "outcomes": outcomes,
        "seconds_for_all": seconds,
        "server_alive_after": alive,
        "server_rss_mib": {"before": before[0][0] / MIB, "peak": max(s[0] for s in samples) / MIB},
        "workers_rss_mib": {"before": before[0][1] / MIB, "peak": max(s[1] for s in samples) / MIB},
        "total_rss_mib": {
            "before": sum(before[0]) / MIB,
            "peak": max(s[0] + s[1] for s in samples) / MIB,
        },
    }


async def run(args: argparse.Namespace) -> None:
    timing = await latency(args.repeats)
    memory = await bombs(args.sessions)
    print_table(
        f"decode latency, {timing['audio']}, {timing['repeats']} runs (ms)",
        ["path", "p50", "p95"],
        [
            ["in-process (thread)", timing["in_process_ms"]["p50"], timing["in_process_ms"]["p95"]],
            ["isolated (worker)", timing["isolated_ms"]["p50"], timing["isolated_ms"]["p95"]],
            ["difference of the p50s", timing["isolated_ms"]["p50"] - timing["in_process_ms"]["p50"], ""],
            ["added by isolation", timing["added_ms"]["p50"], timing["added_ms"]["p95"]],
        ],
    )
    print_table(
        f"RSS with {memory['sessions']} bombs uploaded at once, one per session (MiB); "
        f"outcomes {memory['outcomes']}, server alive: {memory['server_alive_after']}",
        ["process", "before", "peak"],
        [
            [name, memory[key]["before"], memory[key]["peak"]]
            for name, key in (("server", "server_rss_mib"), ("decode workers + forkserver", "workers_rss_mib"),
                              ("together", "total_rss_mib"))
        ],
    )
    write_json("decode", {"latency": timing, "bombs": memory})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--sessions", type=int, default=8)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
