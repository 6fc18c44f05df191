"""How long a phone-like client takes to connect through TURN, in headless Chromium.

Run it through scripts/bench_turn (a private network namespace with coturn, like the tests):

    ./scripts/bench_turn [--runs 10] [--out bench-results/turn.json]

Each run creates a session (the server mints its TURN REST credentials), opens its
player_url in a fresh browser context and measures, on the machine's clock, from the
start of the create call:
  connected     the page's peer connection reports `connected`
  first frame   the first video frame is shown (requestVideoFrameCallback)
in two modes: `relay` (the page may use relayed candidates only, as behind a carrier NAT
that lets nothing else through; coturn in the namespace) and `direct` (host candidates,
no TURN), and checks that the selected candidate pair was the expected kind.
Prints a table of medians (min-max) and writes every run to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import sync_playwright

from server.settings import Settings
from tests.browser.player_page import VIEWPORT, PlayerPage, launch_chromium
from tests.browser.test_turn_relay import SELECTED_PAIR_SCRIPT
from tests.live_server import NETNS_HOST_ADDRESS, LiveServer, in_test_network_namespace
from tests.turn_server import TurnServer

TURN_SECRET = "shared-secret-of-the-benchmark-only"
FIGURES = ("create_ms", "connected_ms", "first_frame_ms")
MODES = ("relay", "direct")

# After the recorder: reports when each connection is up and when the first frame shows,
# in ms since the epoch (comparable with this process's time.time()); RELAY_ONLY forces
# relayed candidates.
TIMING_SCRIPT = """
(() => {
  const relayOnly = RELAY_ONLY;
  const now = () => performance.timeOrigin + performance.now();
  const Recorded = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Recorded {
    constructor(config, ...rest) {
      super(relayOnly ? { ...(config || {}), iceTransportPolicy: "relay" } : config, ...rest);
      this.addEventListener("connectionstatechange", () => {
        if (this.connectionState === "connected") window.__playerTest.report("connected", now());
      });
    }
  };
  document.addEventListener("DOMContentLoaded", () => {
    const video = document.getElementById("avatar");
    video.requestVideoFrameCallback(() => window.__playerTest.report("first-frame", now()));
  });
})();
"""


def one_run(browser: Any, server: LiveServer, relay_only: bool) -> dict[str, Any]:
    context = browser.new_context(viewport=VIEWPORT)
    try:
        script = TIMING_SCRIPT.replace("RELAY_ONLY", "true" if relay_only else "false")
        player = PlayerPage(context, (script,))
        started = time.time() * 1000
        response = httpx.post(f"{server.url}/webrtc/sessions/create", timeout=120)
        created_at = time.time() * 1000
        response.raise_for_status()
        session = response.json()
        try:
            player.open(session["player_url"])
            player.wait_for_state("ready", timeout=30)
            pair = player.page.evaluate(SELECTED_PAIR_SCRIPT)
            (connected,) = player.messages("connected")
            (first_frame,) = player.messages("first-frame")
            return {
                "create_ms": created_at - started,
                "connected_ms": connected - started,
                "first_frame_ms": first_frame - started,
                "local_candidate": pair["local"]["candidateType"],
                "remote_candidate": pair["remote"]["candidateType"],
            }
        finally:
            httpx.delete(f"{server.url}/webrtc/sessions/{session['session_id']}")
    finally:
        context.close()


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {
        figure: {"median": statistics.median(values), "min": min(values), "max": max(values)}
        for figure in FIGURES
        if (values := [run[figure] for run in runs])
    }


def print_table(results: dict[str, dict[str, Any]], runs: int) -> None:
    print(f"\ncreate -> connected / first frame in headless Chromium, {runs} runs: "
          "median (min-max), ms")
    header = f"{'mode':<8}{'pair (local/remote)':<22}" + "".join(
        f"{figure.removesuffix('_ms'):>20}" for figure in FIGURES
    )
    print(header)
    print("-" * len(header))
    for mode, result in results.items():
        pairs = sorted({f"{r['local_candidate']}/{r['remote_candidate']}" for r in result["runs"]})
        cells = "".join(
            f"{s['median']:.0f} ({s['min']:.0f}-{s['max']:.0f})".rjust(20)
            for s in (result["summary"][figure] for figure in FIGURES)
        )
        print(f"{mode:<8}{', '.join(pairs):<22}{cells}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("bench-results/turn.json"))
    args = parser.parse_args()
    if not in_test_network_namespace():
        print("Run it through ./scripts/bench_turn (a private network namespace).",
              file=sys.stderr)
        return 2

    turn = TurnServer(TURN_SECRET).start()
    servers = {
        "relay": LiveServer(Settings.from_env(
            os.environ, stun_urls=(), turn_urls=(), ice_host_addresses=(NETNS_HOST_ADDRESS,),
            turn_rest_urls=tuple(turn.urls), turn_secret=TURN_SECRET,
        )),
        "direct": LiveServer(Settings.from_env(
            os.environ, stun_urls=(), turn_urls=(), ice_host_addresses=(NETNS_HOST_ADDRESS,),
            turn_rest_urls=(), turn_secret="",
        )),
    }
    results: dict[str, dict[str, Any]] = {}
    try:
        for server in servers.values():
            server.start()
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            version = browser.version
            for mode in MODES:
                one_run(browser, servers[mode], mode == "relay")  # warm-up: the avatar loads
                runs = []
                for index in range(args.runs):
                    runs.append(one_run(browser, servers[mode], mode == "relay"))
                    print(f"{mode} run {index + 1}/{args.runs}: " + ", ".join(
                        f"{k} {v:.0f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in runs[-1].items()), flush=True)
                results[mode] = {"runs": runs, "summary": summarise(runs)}
            browser.close()
    finally:
        for server in servers.values():
            server.stop()
        turn.stop()

    wrong = [r for r in results["relay"]["runs"] if r["local_candidate"] != "relay"]
    print_table(results, args.runs)
    report = {
        "benchmark": "turn",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "chromium": version,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "turn": {"server": "coturn", "urls": turn.urls},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {args.out}")
    if wrong:
        print(f"{len(wrong)} relay runs did not select a relayed local candidate", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
