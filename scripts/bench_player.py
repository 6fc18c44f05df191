"""How fast the hosted player comes up and starts speaking, in headless Chromium.

Run it through scripts/bench_player (a private network namespace, like the tests):

    ./scripts/bench_player [--runs 10] [--codec vp8 h264] [--out bench-results/player.json]

Each run opens a new session's player_url in a fresh browser context and measures, on
the page's own clock:
  first frame   navigation start -> the first video frame shown (requestVideoFrameCallback)
  ready         navigation start -> the player reports `ready`
  upload->live  the page starts POSTing speech (FormData, as the app does) -> `live`
  upload->200   the same POST -> its response (upload, decoding, queueing)
Prints a table of medians (min-max) and writes every run to a JSON file.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from server.settings import Settings
from tests.audio_files import encode, speech_like
from tests.browser.player_page import (
    UPLOAD_SCRIPT,
    VIEWPORT,
    PlayerPage,
    launch_chromium,
)
from tests.live_server import NETNS_HOST_ADDRESS, LiveServer, in_test_network_namespace

SPEECH_SECONDS = 2.0
IDLE_BEFORE_UPLOAD_SECONDS = 1.0
FIGURES = ("first_frame_ms", "ready_ms", "upload_to_live_ms", "upload_to_response_ms")

FIRST_FRAME_SCRIPT = """
document.addEventListener("DOMContentLoaded", () => {
  const video = document.getElementById("avatar");
  video.requestVideoFrameCallback((now) => window.__playerTest.report("first-frame", now));
});
"""


def one_run(browser: Any, server: LiveServer, codec: str, audio: str) -> dict[str, float]:
    context = browser.new_context(viewport=VIEWPORT)
    try:
        player = PlayerPage(context, (FIRST_FRAME_SCRIPT,))
        created = server_post(player, server, "/webrtc/sessions/create")
        try:
            player.open(f"{created['player_url']}&codec={codec}")  # after its ?token=
            player.wait_for_state("ready", timeout=30)
            player.wait(IDLE_BEFORE_UPLOAD_SECONDS)
            upload = player.page.evaluate(
                UPLOAD_SCRIPT, {"sessionId": created["session_id"], "audio": audio}
            )
            if upload["status"] != 200:
                raise RuntimeError(f"upload refused: {upload}")
            player.wait_for_state("live", timeout=30)
            player.wait_for_state("ready", count=2, timeout=30)
            is_state = lambda state: lambda m: m["type"] == "state" and m["state"] == state  # noqa: E731
            return {
                "first_frame_ms": player.reported_at("first-frame", lambda _: True),
                "ready_ms": player.reported_at("events", is_state("ready")),
                "upload_to_live_ms": player.reported_at("events", is_state("live"))
                - upload["started"],
                "upload_to_response_ms": upload["answered"] - upload["started"],
            }
        finally:
            player.page.request.delete(
                f"{server.url}/webrtc/sessions/{created['session_id']}"
            )
    finally:
        context.close()


def server_post(player: PlayerPage, server: LiveServer, path: str) -> dict[str, Any]:
    response = player.page.request.post(f"{server.url}{path}")
    if not response.ok:
        raise RuntimeError(f"POST {path}: {response.status} {response.text()}")
    return response.json()


def summarise(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {
        figure: {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
        }
        for figure in FIGURES
        if (values := [run[figure] for run in runs])
    }


def print_table(results: dict[str, dict[str, Any]], runs: int) -> None:
    print(f"\nhosted player in headless Chromium, {runs} runs per codec: median (min-max), ms")
    header = f"{'codec':<6}" + "".join(f"{figure.removesuffix('_ms'):>24}" for figure in FIGURES)
    print(header)
    print("-" * len(header))
    for codec, result in results.items():
        cells = []
        for figure in FIGURES:
            s = result["summary"][figure]
            cells.append(f"{s['median']:.0f} ({s['min']:.0f}-{s['max']:.0f})".rjust(24))
        print(f"{codec:<6}{''.join(cells)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--codec", nargs="+", default=["vp8", "h264"], choices=["vp8", "h264"])
    parser.add_argument("--out", type=Path, default=Path("bench-results/player.json"))
    args = parser.parse_args()
    if not in_test_network_namespace():
        print("Run it through ./scripts/bench_player (a private network namespace).",
              file=sys.stderr)
        return 2

    settings = Settings.from_env(
        os.environ, stun_urls=(), turn_urls=(), ice_host_addresses=(NETNS_HOST_ADDRESS,)
    )
    audio = base64.b64encode(encode(speech_like(SPEECH_SECONDS), "m4a")).decode()
    server = LiveServer(settings).start()
    results: dict[str, dict[str, Any]] = {}
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            version = browser.version
            for codec in args.codec:
                runs = []
                for index in range(args.runs):
                    runs.append(one_run(browser, server, codec, audio))
                    print(f"{codec} run {index + 1}/{args.runs}: "
                          + ", ".join(f"{k} {v:.0f}" for k, v in runs[-1].items()), flush=True)
                results[codec] = {"runs": runs, "summary": summarise(runs)}
            browser.close()
    finally:
        server.stop()

    print_table(results, args.runs)
    report = {
        "benchmark": "player",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "chromium": version,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "engine": settings.lipsync_engine,
        "speech_seconds": SPEECH_SECONDS,
        "audio_prebuffer_seconds": settings.audio_prebuffer_seconds,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
