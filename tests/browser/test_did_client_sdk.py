"""D-ID's own published client, `@d-id/client-sdk`, against this server in headless
Chromium, with only `baseURL` (and the key) changed: it reads the agent's runtime,
creates an agent stream, answers the server's offer over its `JanusDataChannel`, shows
the idle avatar, speaks text (the mouth moves; the SDK reports TALKING then IDLE from the
stream/started and stream/done events), interrupts, and disconnects (DELETE).

The SDK's own files are served by the test (scripts/npm_packages.sh fetched them with npm
before the network namespace was entered); any other host is blocked in the page.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

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

SDK = ROOT / ".cache" / "npm" / "d-id-client-sdk-2.0.10" / "dist"  # scripts/npm_packages.sh
KEY = "did-sdk-browser-key-0123456789ab"
TEXT = "Hello! I am your avatar, speaking through the D-ID client. How are you today?"
OPEN_MOUTH = 0.2

# The page a D-ID SDK user writes (after the SDK's README), with the server's base URL.
# DirectPlayback: speak() only, no D-ID chat (no LLM agent, no notifications socket).
PAGE = """<!doctype html><html><head><style>html, body { margin: 0; background: #000; }
video { display: block; width: 512px; height: 512px; }</style></head>
<body><video id="video" autoplay muted playsinline></video>
<script type="module">
import { createAgentManager } from "./sdk/index.js";
const query = new URLSearchParams(location.hash.slice(1));
const video = document.getElementById("video");
window.didTest = { connection: [], activity: [], errors: [], error: null, manager: null };
try {
  const manager = await createAgentManager(query.get("agent"), {
    auth: { type: "basic", token: query.get("key") },
    baseURL: query.get("url"),
    mode: "DirectPlayback",
    enableAnalytics: false,
    callbacks: {
      onSrcObjectReady(stream) { video.srcObject = stream; },
      onConnectionStateChange(state) { didTest.connection.push(state); },
      onAgentActivityStateChange(state) { didTest.activity.push(state); },
      onError(error) { didTest.errors.push(String((error && error.message) || error)); },
    },
  });
  didTest.manager = manager;
  await manager.connect();
} catch (e) { didTest.error = String((e && e.stack) || e); }
</script></body></html>
"""


def _cannot_run(reason: str) -> None:
    cannot_run("D-ID client SDK test", reason)


@pytest.fixture(scope="module")
def site() -> Iterator[PageSite]:
    reason = why_browser_tests_cannot_run()
    if reason is not None:
        _cannot_run(reason)
    if not (SDK / "index.js").exists():
        _cannot_run(f"no {SDK}: run the suite with ./scripts/test (it fetches the SDK with npm)")
    files = {"index.html": PAGE.encode()}
    for path in SDK.glob("*.js"):
        files[f"sdk/{path.name}"] = path.read_bytes()
    page_site = PageSite(files)
    yield page_site
    page_site.close()


@pytest.fixture(scope="module")
def server(site: PageSite) -> Iterator[LiveServer]:
    with server_for(site, KEY) as live:
        yield live


class SdkTab:
    """A tab that reaches only the page's site and the server; it records every request."""

    def __init__(self, browser: Browser, site: PageSite, server: str) -> None:
        self.site, self.server = site, server
        self.blocked: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.context = browser.new_context(viewport=VIEWPORT)
        self.context.route("**/*", self._route)
        self.page: Page = self.context.new_page()
        self.page.on("request", lambda r: self.requests.append((r.method, r.url)))

    def _route(self, route: Route) -> None:
        url = route.request.url
        if url.startswith((self.site.origin + "/", self.server + "/")):
            route.continue_()
            return
        self.blocked.append(url)
        route.abort()

    def state(self) -> dict[str, Any]:
        return self.page.evaluate(
            """() => ({ connection: didTest.connection, activity: didTest.activity,
                        errors: didTest.errors, error: didTest.error,
                        width: document.getElementById("video").videoWidth,
                        time: document.getElementById("video").currentTime })"""
        )

    def wait_for(self, wanted: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            assert state["error"] is None, state
            if wanted(state):
                return state
            assert time.monotonic() < deadline, (state, self.requests, self.blocked)
            self.page.wait_for_timeout(50)

    def mouth(self) -> float:
        return mouth_dark_share(decode_png(self.page.screenshot()))


@pytest.fixture
def tab(chromium: Browser, site: PageSite, server: LiveServer) -> Iterator[SdkTab]:
    sdk_tab = SdkTab(chromium, site, server.url)
    yield sdk_tab
    sdk_tab.context.close()


def test_d_ids_client_sdk_connects_speaks_interrupts_and_disconnects(
    tab: SdkTab, server: LiveServer
) -> None:
    tab.page.goto(f"{tab.site.origin}/index.html#agent=demo&key={KEY}&url={server.url}")
    tab.wait_for(lambda s: "connected" in s["connection"], 30)
    tab.wait_for(lambda s: s["width"] == 512 and s["time"] > 0.5, 10)
    idle = tab.mouth()

    spoken = tab.page.evaluate("async () => await didTest.manager.speak(%r)" % TEXT)
    assert spoken["status"] == "started" and spoken["duration"] > 2, spoken
    tab.wait_for(lambda s: "TALKING" in s["activity"], 10)
    opened = []
    for _ in range(60):
        opened.append(tab.mouth())
        if max(opened) > OPEN_MOUTH:
            break
        tab.page.wait_for_timeout(50)
    tab.page.evaluate("() => didTest.manager.interrupt({ type: 'click' })")
    interrupted = time.monotonic()
    tab.wait_for(lambda s: s["activity"][-1:] == ["IDLE"], 5)
    assert time.monotonic() - interrupted < spoken["duration"] - 1  # cut, not played out

    tab.page.evaluate("async () => await didTest.manager.disconnect()")
    state = tab.wait_for(lambda s: s["connection"][-1:] == ["disconnected"], 10)

    calls = [(m, u.removeprefix(server.url)) for m, u in tab.requests if u.startswith(server.url)]
    stream_id = spoken_stream_id(calls)
    assert ("GET", "/agents/demo/runtime") in calls
    assert ("POST", "/agents/demo/streams") in calls
    assert ("POST", f"/agents/demo/streams/{stream_id}/sdp") in calls
    assert ("POST", f"/agents/demo/streams/{stream_id}/ice") in calls
    assert ("DELETE", f"/agents/demo/streams/{stream_id}") in calls
    assert server.call(_ended(server, stream_id))
    assert idle < 0.05 and max(opened) > OPEN_MOUTH, (idle, opened)
    assert state["errors"] == [] and tab.blocked == [], (state, tab.blocked)


def spoken_stream_id(calls: list[tuple[str, str]]) -> str:
    for method, path in calls:
        if method == "POST" and path.endswith("/sdp"):
            return path.split("/")[-2]
    raise AssertionError(f"no sdp call: {calls}")


async def _ended(server: LiveServer, stream_id: str) -> bool:
    """Whether the stream's session is gone (the SDK's DELETE ended it)."""
    return server.app.state.server.sessions.find(stream_id) is None
