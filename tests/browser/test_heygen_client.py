"""HeyGen's own published v1 client, `@heygen/streaming-avatar` 1.0.16 (raw WebRTC against
`/v1/streaming.*`), drives a session in headless Chromium with only its `basePath`
changed: from a page of another origin (listed in CORS_ALLOW_ORIGINS) of a server with
API keys, with a token its backend got from `streaming.create_token` (never the key),
`createStartAvatar` connects and the idle avatar shows; `speak` makes the mouth
move between the data channel's `avatar_start_talking` and `avatar_stop_talking`;
`interrupt` ends the task early; `stopAvatar` ends the session. The package's own files
are served by the test (scripts/npm_packages.sh fetched them before the network namespace
was entered); any other host is blocked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.browser.conftest import why_browser_tests_cannot_run
from tests.browser.player_page import VIEWPORT, decode_png
from tests.browser.page_site import PageSite, cannot_run, server_for
from tests.live_server import LiveServer
from tests.server_process import ROOT
from tests.webrtc_client import mouth_dark_share

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

pytestmark = pytest.mark.webrtc

SDK = ROOT / ".cache" / "npm" / "heygen-streaming-avatar-1.0.16"  # scripts/npm_packages.sh
KEY = "heygen-browser-key-0123456789abcdef"
SENTENCE = "Hello there. I am the avatar, speaking through HeyGen's own client library."
LONG_TEXT = " ".join([SENTENCE] * 4)
OPEN_MOUTH = 0.2
CLOSED_MOUTH = 0.05

# The page a HeyGen v1 user writes, after the package's README: a video element, the
# client configured with the server and the session token, its events recorded. The package is
# CommonJS (dist/): a `require` over its own files, which the test serves as one JSON.
PAGE = """<!doctype html><html><head><style>html, body { margin: 0; background: #000; }
video { display: block; width: 512px; height: 512px; }</style></head>
<body><video id="video" autoplay muted playsinline></video>
<script type="module">
window.heygenTest = { events: [], error: null, sessionId: null };
try {
  const files = await (await fetch("./sdk.json")).json();
  const modules = {};
  const resolve = (from, name) => {
    const parts = from.split("/").slice(0, -1);
    for (const part of name.split("/")) {
      if (part === "..") parts.pop(); else if (part !== ".") parts.push(part);
    }
    const path = parts.join("/");
    return path + ".js" in files ? path + ".js" : path + "/index.js";
  };
  const load = (path) => {
    if (!modules[path]) {
      modules[path] = { exports: {} };
      new Function("module", "exports", "require", files[path])(
        modules[path], modules[path].exports, (name) => load(resolve(path, name)));
    }
    return modules[path].exports;
  };
  const { Configuration, StreamingAvatarApi } = load("dist/index.js");
  const query = new URLSearchParams(location.hash.slice(1));
  const avatar = new StreamingAvatarApi(new Configuration({
    basePath: query.get("server"), accessToken: query.get("token"),
  }));
  for (const type of ["avatar_start_talking", "avatar_stop_talking"]) {
    avatar.addEventHandler(type, (detail) => heygenTest.events.push({ ...detail, at: Date.now() }));
  }
  const data = await avatar.createStartAvatar(
    { newSessionRequest: { quality: "low", avatarName: "demo", voice: { voiceId: "en-us" } } },
    (line) => console.log(line));
  if (!data) throw new Error("createStartAvatar failed (see the console)");
  heygenTest.sessionId = data.sessionId;
  heygenTest.pc = avatar.peerConnection;
  document.getElementById("video").srcObject = avatar.mediaStream;
  const sessionId = data.sessionId;
  heygenTest.speak = async (text) =>
    (await avatar.speak({ taskRequest: { text, sessionId } })).data;
  heygenTest.interrupt = () => avatar.interrupt({ interruptRequest: { sessionId } });
  heygenTest.stop = () => avatar.stopAvatar({ stopSessionRequest: { sessionId } });
} catch (e) { heygenTest.error = String(e); }
</script></body></html>
"""


def _cannot_run(reason: str) -> None:
    cannot_run("HeyGen client test", reason)


def sdk_files() -> dict[str, str]:
    """The package's compiled CommonJS files by path (`dist/…`), its older copy left out."""
    dist = SDK / "dist"
    return {
        path.relative_to(SDK).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(dist.rglob("*.js"))
        if "src" not in path.relative_to(dist).parts
    }


@pytest.fixture(scope="module")
def site() -> Iterator[PageSite]:
    reason = why_browser_tests_cannot_run()
    if reason is not None:
        _cannot_run(reason)
    if not (SDK / "dist" / "index.js").exists():
        _cannot_run(f"no {SDK}: run the suite with ./scripts/test (it fetches the package with npm)")
    page_site = PageSite(
        {"heygen/index.html": PAGE.encode(), "heygen/sdk.json": json.dumps(sdk_files()).encode()}
    )
    yield page_site
    page_site.close()


@pytest.fixture(scope="module")
def keyed_server(site: PageSite) -> Iterator[LiveServer]:
    with server_for(site, KEY) as live:
        yield live


class HeygenTab:
    """A tab of its own context that reaches only the page's site and the server."""

    def __init__(self, browser: Browser, site: PageSite, server: str) -> None:
        self.site = site
        self.server = server
        self.blocked: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.console: list[str] = []
        self.context = browser.new_context(viewport=VIEWPORT)
        self.context.route("**/*", self._route)
        self.page: Page = self.context.new_page()
        self.page.on("request", lambda r: self.requests.append((r.method, r.url)))
        self.page.on("console", lambda m: self.console.append(m.text))

    def _route(self, route: Route) -> None:
        url = route.request.url
        if url.startswith((self.site.origin + "/", self.server + "/")):
            route.continue_()
            return
        self.blocked.append(url)
        route.abort()

    def open(self, token: str) -> None:
        self.page.goto(f"{self.site.origin}/heygen/index.html#server={self.server}&token={token}")

    def state(self) -> dict[str, Any]:
        return self.page.evaluate(
            """() => ({ error: heygenTest.error, sessionId: heygenTest.sessionId,
                        connection: heygenTest.pc ? heygenTest.pc.connectionState : null,
                        events: heygenTest.events,
                        width: document.getElementById("video").videoWidth,
                        time: document.getElementById("video").currentTime })"""
        )

    def wait_for(self, wanted: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            assert state["error"] is None, (state, self.console)
            if wanted(state):
                return state
            assert time.monotonic() < deadline, (state, self.console, self.requests)
            self.page.wait_for_timeout(50)

    def mouth(self) -> float:
        return mouth_dark_share(decode_png(self.page.screenshot()))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(chromium: Browser, site: PageSite, keyed_server: LiveServer) -> Iterator[HeygenTab]:
    opened = HeygenTab(chromium, site, keyed_server.url)
    yield opened
    opened.close()


def _event(state: dict[str, Any], kind: str, task_id: str) -> dict[str, Any] | None:
    return next((e for e in state["events"] if e["type"] == kind and e["task_id"] == task_id), None)


def test_heygens_v1_client_connects_speaks_interrupts_and_stops(
    tab: HeygenTab, keyed_server: LiveServer
) -> None:
    with httpx.Client(base_url=keyed_server.url, headers={"X-Api-Key": KEY}) as backend:
        minted = backend.post("/v1/streaming.create_token", json={}).raise_for_status().json()
    tab.open(minted["data"]["token"])
    # The first session of a run may prepare the demo avatar first.
    state = tab.wait_for(lambda s: s["connection"] == "connected", 60)
    tab.wait_for(lambda s: s["width"] == 512 and s["time"] > 0.5, 10)
    sid = state["sessionId"]
    assert tab.mouth() < CLOSED_MOUTH  # the idle avatar

    task = tab.page.evaluate("(text) => heygenTest.speak(text)", SENTENCE)
    assert task["taskId"] and 2000 < task["durationMs"] < 10000, task
    tab.wait_for(lambda s: _event(s, "avatar_start_talking", task["taskId"]) is not None, 5)
    speaking = []
    while _event(tab.state(), "avatar_stop_talking", task["taskId"]) is None:
        speaking.append(tab.mouth())
        assert len(speaking) < 400, "no avatar_stop_talking"
    assert max(speaking) > OPEN_MOUTH, speaking
    stopped = _event(tab.state(), "avatar_stop_talking", task["taskId"])
    assert abs(stopped["duration_ms"] - task["durationMs"]) < 50

    long_task = tab.page.evaluate("(text) => heygenTest.speak(text)", LONG_TEXT)
    tab.wait_for(lambda s: _event(s, "avatar_start_talking", long_task["taskId"]) is not None, 5)
    tab.page.wait_for_timeout(1000)
    tab.page.evaluate("() => heygenTest.interrupt()")
    cut = tab.wait_for(lambda s: _event(s, "avatar_stop_talking", long_task["taskId"]) is not None, 2)
    assert _event(cut, "avatar_stop_talking", long_task["taskId"])["duration_ms"] < long_task["durationMs"] / 2

    tab.page.evaluate("() => heygenTest.stop()")
    with httpx.Client(base_url=keyed_server.url, headers={"X-Api-Key": KEY}) as api:
        deadline = time.monotonic() + 5
        while api.get(f"/webrtc/sessions/{sid}").status_code != 404:
            assert time.monotonic() < deadline, "streaming.stop did not end the session"
            time.sleep(0.1)
    calls = [url.rsplit("/", 1)[1] for method, url in tab.requests if method == "POST"]
    assert calls[:1] == ["streaming.new"] and "streaming.start" in calls and "streaming.ice" in calls
    assert calls[-1] == "streaming.stop" and "streaming.interrupt" in calls
    assert tab.blocked == []
