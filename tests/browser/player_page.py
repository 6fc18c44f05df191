"""Headless Chromium as the browser tests and the player benchmark launch it, and the
hosted player page in it, with what the page reported and what its connection received.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np

if TYPE_CHECKING:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        Playwright,
        Request,
    )

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright's own browsers are never used

# DESIGN.md, "Testing on these machines": what proved necessary for WebRTC in a private
# network namespace. Host candidates must not be hidden behind mDNS names (aiortc cannot
# resolve them there); loopback is allowed for peer connections.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--allow-loopback-for-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
AUTOPLAY_ALLOWED = "--autoplay-policy=no-user-gesture-required"
AUTOPLAY_NEEDS_GESTURE = "--autoplay-policy=user-gesture-required"  # as iOS Safari does

# The demo avatar's frames are 512 x 512: in a viewport of that size the video fills the
# page exactly, and a screenshot's pixels are the frame's (tests/webrtc_client.MOUTH_BOX).
VIEWPORT = {"width": 512, "height": 512}

POLL_SECONDS = 0.05

# Injected before the page's own scripts, in every frame: passes each message the player
# posts (as a DOM event, and to this window when it embeds the player) to the test as it
# happens, through the console, and keeps the peer connections the page opens, for their
# stats. Neither the console nor waiting needs the page to run code for the test: a
# Playwright evaluate() or exposed binding runs with a user gesture, which would lift the
# autoplay policy that the sound unlock is about.
REPORT_PREFIX = "avatar-player-test "
RECORDER_SCRIPT = """
(() => {
  const report = (channel, message) => console.debug("%s" + JSON.stringify(
    { channel, top: window === window.top, at: performance.now(), message }));
  window.__playerTest = { report, peers: [] };
  window.addEventListener("avatar-player", (event) => report("events", event.detail));
  window.addEventListener("message", (event) => {
    if (event.data && event.data.source === "avatar-player") report("framed", event.data);
  });
  const Native = window.RTCPeerConnection;
  if (Native) {
    window.RTCPeerConnection = class extends Native {
      constructor(...args) {
        super(...args);
        window.__playerTest.peers.push(this);
      }
    };
  }
})();
""".replace("%s", REPORT_PREFIX)

# What a React Native WebView injects: a postMessage that takes strings.
REACT_NATIVE_SCRIPT = """
window.ReactNativeWebView = {
  postMessage: (text) => window.__playerTest.report("native", text),
};
"""

# The app's side of the React Native flow in the README, with the fetch and FormData the
# app uses; `new Blob` stands for React Native's {uri, name, type}. Run in a page of the
# server's origin.
CREATE_SCRIPT = """
async () => (await fetch("/webrtc/sessions/create?avatar_id=demo", { method: "POST" })).json()
"""
UPLOAD_SCRIPT = """
async ({ sessionId, audio }) => {
  const bytes = Uint8Array.from(atob(audio), (c) => c.charCodeAt(0));
  const form = new FormData();
  form.append("audio_file", new Blob([bytes], { type: "audio/mp4" }), "speech.m4a");
  const started = performance.now();
  const response = await fetch(`/webrtc/sessions/${sessionId}/stream`,
                               { method: "POST", body: form });
  const body = await response.json();
  return { status: response.status, body, started, answered: performance.now() };
}
"""

# The newest peer connection's inbound RTP reports, by kind, with their codec.
INBOUND_STATS_SCRIPT = """
async () => {
  const pc = window.__playerTest.peers.at(-1);
  if (!pc) return {};
  const reports = await pc.getStats();
  const inbound = { connectionState: pc.connectionState };
  reports.forEach((report) => {
    if (report.type === "inbound-rtp") {
      const codec = reports.get(report.codecId);
      inbound[report.kind] = { ...report, mimeType: codec ? codec.mimeType : null,
                               sdpFmtpLine: codec ? codec.sdpFmtpLine : null };
    }
  });
  return inbound;
}
"""


def launch_chromium(playwright: Playwright, autoplay: bool = True) -> Browser:
    """Debian's Chromium, headless, with a fresh profile (Playwright makes one per launch)."""
    flags = [*CHROMIUM_FLAGS, AUTOPLAY_ALLOWED if autoplay else AUTOPLAY_NEEDS_GESTURE]
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=flags)


def decode_png(data: bytes) -> np.ndarray:
    """A PNG (a screenshot) as an RGB array [H, W, 3]."""
    decoder = av.CodecContext.create("png", "r")
    (frame,) = decoder.decode(av.Packet(data))
    return frame.to_ndarray(format="rgb24")


class PlayerPage:
    """A tab of its own browser context (RECORDER_SCRIPT and `scripts` injected) that
    shows the player, or a page embedding it, and what the player told it."""

    def __init__(self, context: BrowserContext, scripts: tuple[str, ...] = ()) -> None:
        self.context = context
        # (channel, page time in ms, message), from the top frame only
        self.reported: list[tuple[str, float, Any]] = []
        self.sent: list[tuple[str, str | None]] = []  # (URL, body) of the page's POSTs
        for script in (RECORDER_SCRIPT, *scripts):
            context.add_init_script(script)
        self.page = context.new_page()
        self.page.on("console", self._on_console)
        self.page.on("request", self._on_request)

    def open(self, url: str) -> None:
        self.page.goto(url)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.text.startswith(REPORT_PREFIX):
            report = json.loads(message.text[len(REPORT_PREFIX) :])
            if report["top"]:
                self.reported.append((report["channel"], report["at"], report["message"]))

    def _on_request(self, request: Request) -> None:
        if request.method == "POST":
            self.sent.append((request.url, request.post_data))

    def posted(self, path_end: str) -> list[Any]:
        """The JSON bodies the page POSTed to URLs ending in `path_end`."""
        return [json.loads(body or "null") for url, body in self.sent if url.endswith(path_end)]

    # --- what the page reported ----------------------------------------------------------

    def messages(self, channel: str = "events") -> list[dict[str, Any]]:
        """What the player told the top page: `events` (DOM events, when it is the player),
        `framed` (postMessage, when it embeds the player) or `native`
        (ReactNativeWebView.postMessage, which takes JSON text)."""
        return [
            json.loads(message) if channel == "native" else message
            for message in self.raw_messages(channel)
        ]

    def raw_messages(self, channel: str) -> list[Any]:
        return [message for on, _, message in self.reported if on == channel]

    def reported_at(self, channel: str, wanted: Callable[[Any], bool]) -> float:
        """When (page time, ms since navigation) the first such message was reported."""
        return next(at for on, at, message in self.reported if on == channel and wanted(message))

    def states(self, channel: str = "events") -> list[str]:
        return [m["state"] for m in self.messages(channel) if m["type"] == "state"]

    def wait(self, seconds: float) -> None:
        """Let time pass; what the page reports meanwhile arrives."""
        self.page.wait_for_timeout(seconds * 1000)

    def wait_for_message(
        self, wanted: Callable[[dict[str, Any]], bool], timeout: float, channel: str = "events",
        count: int = 1,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.messages(channel) if wanted(m)]
            if len(found) >= count:
                return found[count - 1]
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no such message (x{count}) within {timeout} s; "
                    f"the player reported {self.messages(channel)}"
                )
            self.wait(POLL_SECONDS)

    def wait_for_state(
        self, state: str, timeout: float = 15.0, count: int = 1, channel: str = "events"
    ) -> dict[str, Any]:
        """Wait until the player has reported `state` `count` times; returns that message."""
        return self.wait_for_message(
            lambda m: m["type"] == "state" and m["state"] == state, timeout, channel, count
        )

    # --- what its connection received ----------------------------------------------------

    def inbound(self) -> dict[str, Any]:
        """The newest peer connection's state and inbound `video` and `audio` reports."""
        return self.page.evaluate(INBOUND_STATS_SCRIPT)

    def peer_connections(self) -> int:
        """How many peer connections (offers) the page has made."""
        return self.page.evaluate("window.__playerTest.peers.length")

    def wait_for_frames(self, count: int, timeout: float = 15.0) -> int:
        """Wait until the newest connection has decoded `count` video frames."""
        deadline = time.monotonic() + timeout
        while True:
            decoded = self.inbound().get("video", {}).get("framesDecoded", 0)
            if decoded >= count:
                return decoded
            if time.monotonic() > deadline:
                raise AssertionError(f"only {decoded} frames decoded within {timeout} s")
            self.wait(POLL_SECONDS)

    def screenshot(self) -> np.ndarray:
        return decode_png(self.page.screenshot())

    def video_element(self) -> dict[str, Any]:
        return self.page.evaluate(
            """() => {
              const video = document.getElementById("avatar");
              const box = video.getBoundingClientRect();
              return { width: box.width, height: box.height, paused: video.paused,
                       muted: video.muted, currentTime: video.currentTime,
                       videoWidth: video.videoWidth, videoHeight: video.videoHeight,
                       objectFit: getComputedStyle(video).objectFit,
                       playsInline: video.playsInline };
            }"""
        )
