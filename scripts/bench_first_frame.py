#!/usr/bin/env python3
"""Time from `create` to the first video frame at a real aiortc client, per way of
connecting: the client's offer (`/offer`), the server's offer (`/server-offer` and
`/answer`, candidates sent before the answer) and WHEP (`POST /whep/{id}`, candidates
trickled with PATCH), the D-ID-shaped surfaces (`did`: POST /talks/streams, `twin`:
setupConnection) and HeyGen v1 (`/v1/streaming.new`, candidates to `streaming.ice` before
`streaming.start`); for the vendors the create call is their own. The server runs in its
own process on loopback (demo engine).

    .venv/bin/python scripts/bench_first_frame.py [--trials 5] [--surface WHEP ...]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx

from benchkit import median, print_table, server_process, write_json
from tests.heygen_client import HeygenPeer, heygen_new
from tests.janus_client import TWIN, JanusPeer
from tests.server_offer_client import ServerOfferPeer
from tests.webrtc_client import ClientPeer
from tests.whep_client import WhepPeer

SURFACES = {
    "client offer": lambda http, sid: ClientPeer(http, sid, trickle=True),
    "server offer": lambda http, sid: ServerOfferPeer(http, sid),
    "WHEP": lambda http, sid: WhepPeer(http, sid, trickle=True),
}
# D-ID-shaped surfaces create their session themselves: `connect` starts with their create.
VENDOR_SURFACES = {
    "did": lambda http: JanusPeer(http, "/talks/streams"),
    "twin": lambda http: JanusPeer(http, TWIN),
}
FRAME_TIMEOUT_SECONDS = 15.0


async def heygen_peer(http: httpx.AsyncClient) -> HeygenPeer:
    created = await heygen_new(http)
    created.raise_for_status()
    return HeygenPeer(http, created.json()["data"])


# Surfaces whose own call creates the session (timed from before it).
CREATING_SURFACES = {"heygen": heygen_peer}


async def first_frame_ms(http: httpx.AsyncClient, surface: str) -> tuple[float, float]:
    """(ms to connected, ms to the first video frame), both from before `create`."""
    started = time.monotonic()
    if surface in VENDOR_SURFACES:
        peer = VENDOR_SURFACES[surface](http)  # its `connect` starts with the vendor's create
        sid = None
    elif surface in CREATING_SURFACES:
        peer = await CREATING_SURFACES[surface](http)
        sid = peer.session_id
    else:
        created = await http.post("/webrtc/sessions/create")
        created.raise_for_status()
        sid = created.json()["session_id"]
        peer = SURFACES[surface](http, sid)
    try:
        await peer.connect()
        connected = time.monotonic()
        deadline = connected + FRAME_TIMEOUT_SECONDS
        while not peer.received.video:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{surface}: no video frame")
            await asyncio.sleep(0.002)
        first = peer.received.video[0]
    finally:
        await peer.close()
        if sid is None:
            await peer.delete()
        else:
            await http.delete(f"/webrtc/sessions/{sid}")
    packets_in = first.packets_in if first.packets_in is not None else first.arrival
    return (connected - started) * 1000, (packets_in - started) * 1000, (first.arrival - started) * 1000


async def run(url: str, trials: int, surfaces: list[str]) -> dict[str, dict[str, float | list[float]]]:
    results: dict[str, dict[str, float | list[float]]] = {}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for surface in surfaces:
            await first_frame_ms(http, surface)  # warm-up
            timed = [await first_frame_ms(http, surface) for _ in range(trials)]
            results[surface] = {
                "connected_ms_median": median([c for c, _, _ in timed]),
                "first_frame_ms_median": median([f for _, f, _ in timed]),
                "first_frame_ms_max": max(f for _, f, _ in timed),
                "first_frame_ms": [round(f, 1) for _, f, _ in timed],
                "aiortc_output_ms_median": median([d for _, _, d in timed]),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    every = [*SURFACES, *VENDOR_SURFACES, *CREATING_SURFACES]
    parser.add_argument("--surface", action="append", choices=every, help="default: all")
    args = parser.parse_args()
    with server_process() as server:
        results = asyncio.run(run(server.url, args.trials, args.surface or every))
    print_table(
        f"create → first video frame ({args.trials} trials each, after one warm-up)",
        ["surface", "connected ms (median)", "first frame ms (median)", "max", "aiortc output ms (median)"],
        [
            [name, r["connected_ms_median"], r["first_frame_ms_median"], r["first_frame_ms_max"],
             r["aiortc_output_ms_median"]]
            for name, r in results.items()
        ],
    )
    print("first frame: its last RTP packet in (a browser decodes it then); aiortc output: "
          "after aiortc's jitter buffer, which waits for the next frame's first packet")
    write_json("first_frame", {"trials": args.trials, "results": results})


if __name__ == "__main__":
    main()
