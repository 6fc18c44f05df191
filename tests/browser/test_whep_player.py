"""Published WHEP players (npm `whip-whep`, medooze's WHEPClient, and
`@eyevinn/webrtc-player`) watch a session in headless Chromium: from a page of another origin (listed in CORS_ALLOW_ORIGINS) of a
server with API keys, it connects with the session's token as Bearer, trickles with
PATCH, shows the idle avatar, the mouth moves when the session speaks, and stopping it
DELETEs the resource. The package's own files are served by the test (scripts/
npm_packages.sh fetched them before the network namespace was entered); any other host
is blocked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.audio_files import encode, speech_like
from tests.browser.conftest import why_browser_tests_cannot_run
from tests.browser.page_site import PageSite, cannot_run, server_for
from tests.browser.player_page import VIEWPORT, decode_png
from tests.live_server import LiveServer
from tests.server_process import ROOT
from tests.webrtc_client import mouth_dark_share

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

pytestmark = pytest.mark.webrtc

NPM = ROOT / ".cache" / "npm"  # scripts/npm_packages.sh
KEY = "whep-browser-key-0123456789abcdef"

# Before the page's scripts: the stream of each track the page's peer connections get
# (one stream for both: the answer's shared msid), and the newest connection.
RECORDER = """
window.whepTest = { streams: {}, error: null, pc: null };
const Native = window.RTCPeerConnection;
window.RTCPeerConnection = class extends Native {
  constructor(...args) {
    super(...args);
    window.whepTest.pc = this;
    this.addEventListener("track", (event) => {
      window.whepTest.streams[event.track.kind] = event.streams[0] ? event.streams[0].id : null;
    });
  }
};
"""
STYLE = """<style>html, body { margin: 0; background: #000; }
video { display: block; width: 512px; height: 512px; }</style>"""

# The pages a WHEP player's user writes, after each package's README: a video element,
# the endpoint and the Bearer token; `whepTest.stop()` stops the player.
WHIP_WHEP_PAGE = f"""<!doctype html><html><head>{STYLE}</head>
<body><video id="video" autoplay muted playsinline></video>
<script type="module">
import {{ WHEPClient }} from "./whep.js";
const query = new URLSearchParams(location.hash.slice(1));
const video = document.getElementById("video");
const pc = new RTCPeerConnection();
pc.addTransceiver("audio", {{ direction: "recvonly" }});
pc.addTransceiver("video", {{ direction: "recvonly" }});
pc.ontrack = (event) => {{ if (event.streams[0]) video.srcObject = event.streams[0]; }};
const whep = new WHEPClient();
whepTest.stop = () => whep.stop();
whep.view(pc, query.get("url"), query.get("token")).catch((e) => {{ whepTest.error = String(e); }});
</script></body></html>
"""
# @eyevinn/webrtc-player is published as CommonJS (dist/main.js): the page gives it a
# `require` with the `events` package (the other two dependencies serve other players).
EYEVINN_PAGE = f"""<!doctype html><html><head>{STYLE}</head>
<body><video id="video" autoplay muted playsinline></video>
<script type="module">
const load = async (url, require) => {{
  const module = {{ exports: {{}} }};
  new Function("module", "exports", "require", await (await fetch(url)).text())(
    module, module.exports, require);
  return module.exports;
}};
try {{
  const events = await load("./events.js", () => ({{}}));
  const {{ WebRTCPlayer }} = await load("./main.js", (name) => (name === "events" ? events : {{}}));
  const query = new URLSearchParams(location.hash.slice(1));
  const player = new WebRTCPlayer({{
    video: document.getElementById("video"), type: "whep", iceServers: [],
  }});
  whepTest.stop = () => player.unload();
  await player.load(new URL(query.get("url")), "Bearer " + query.get("token"));
}} catch (e) {{ whepTest.error = String(e); }}
</script></body></html>
"""
PLAYER_FILES = {
    "whip-whep": {"whep.js": "whip-whep-1.2.0/whep.js"},
    "eyevinn": {
        "main.js": "eyevinn-webrtc-player-0.13.0/dist/main.js",
        "events.js": "events-3.3.0/events.js",
    },
}
PAGES = {"whip-whep": WHIP_WHEP_PAGE, "eyevinn": EYEVINN_PAGE}


def _cannot_run(reason: str) -> None:
    cannot_run("WHEP player test", reason)


@pytest.fixture(scope="module")
def site() -> Iterator[PageSite]:
    reason = why_browser_tests_cannot_run()
    if reason is not None:
        _cannot_run(reason)
    files: dict[str, bytes] = {}
    for player, needed in PLAYER_FILES.items():
        files[f"{player}/index.html"] = PAGES[player].encode()
        for name, source in needed.items():
            if not (NPM / source).exists():
                _cannot_run(f"no {NPM / source}: run the suite with ./scripts/test (it fetches the players with npm)")
            files[f"{player}/{name}"] = (NPM / source).read_bytes()
    page_site = PageSite(files)
    yield page_site
    page_site.close()


@pytest.fixture(scope="module")
def keyed_server(site: PageSite) -> Iterator[LiveServer]:
    with server_for(site, KEY) as live:
        yield live


@pytest.fixture(scope="module")
def keyed_api(keyed_server: LiveServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=keyed_server.url, timeout=15.0, headers=headers) as client:
        yield client


class WhepTab:
    """A tab of its own context that reaches only the page's site and the server."""

    def __init__(self, browser: Browser, site: PageSite, server: str) -> None:
        self.site = site
        self.server = server
        self.blocked: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.context = browser.new_context(viewport=VIEWPORT)
        self.context.add_init_script(RECORDER)
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

    def open(self, player: str, session: dict[str, Any]) -> None:
        endpoint = f"{self.server}/whep/{session['session_id']}"
        token = session["session_token"]
        self.page.goto(f"{self.site.origin}/{player}/index.html#url={endpoint}&token={token}")

    def state(self) -> dict[str, Any]:
        return self.page.evaluate(
            """() => ({ connection: whepTest.pc && whepTest.pc.connectionState, error: whepTest.error,
                        streams: whepTest.streams,
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
            assert time.monotonic() < deadline, state
            self.page.wait_for_timeout(50)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def whep_tab(chromium: Browser, site: PageSite, keyed_server: LiveServer) -> Iterator[WhepTab]:
    tab = WhepTab(chromium, site, keyed_server.url)
    yield tab
    tab.close()


@pytest.fixture
def keyed_session(keyed_api: httpx.Client) -> Iterator[dict[str, Any]]:
    created = keyed_api.post("/webrtc/sessions/create").raise_for_status().json()
    yield created
    keyed_api.delete(f"/webrtc/sessions/{created['session_id']}")


@pytest.mark.parametrize("player", list(PAGES))
def test_the_whep_player_shows_the_avatar_speaking_and_its_stop_deletes_the_resource(
    whep_tab: WhepTab, keyed_session: dict[str, Any], keyed_api: httpx.Client, player: str
) -> None:
    sid = keyed_session["session_id"]
    whep_tab.open(player, keyed_session)
    connected = whep_tab.wait_for(lambda s: s["connection"] == "connected", 15)
    whep_tab.wait_for(lambda s: s["width"] == 512 and s["time"] > 0.5, 10)
    # One MediaStream for both tracks: the answer's shared msid.
    streams = connected["streams"]
    assert set(streams) == {"audio", "video"} and len(set(streams.values())) == 1, streams
    posts = [url for method, url in whep_tab.requests if method == "POST" and "/whep/" in url]
    assert posts == [f"{whep_tab.server}/whep/{sid}"]
    if player == "whip-whep":  # it trickles; @eyevinn/webrtc-player gathers first
        patches = [url for method, url in whep_tab.requests if method == "PATCH"]
        assert patches and all(url.startswith(f"{whep_tab.server}/whep/{sid}/") for url in patches)

    idle = decode_png(whep_tab.page.screenshot())
    audio = encode(speech_like(2.0), "wav")
    spoken = keyed_api.post(
        f"/webrtc/sessions/{sid}/stream", files={"audio_file": ("s.wav", audio, "audio/wav")}
    )
    assert spoken.status_code == 200, spoken.text
    speaking = []
    for _ in range(60):
        speaking.append(mouth_dark_share(decode_png(whep_tab.page.screenshot())))
        if max(speaking) > 0.2:
            break
        whep_tab.page.wait_for_timeout(50)
    assert mouth_dark_share(idle) < 0.05
    assert max(speaking) > 0.2, speaking

    whep_tab.page.evaluate("() => whepTest.stop()")
    deadline = time.monotonic() + 10
    while keyed_api.get(f"/webrtc/sessions/{sid}").json()["connection_state"] != "none":
        assert time.monotonic() < deadline, "the resource was not deleted"
        time.sleep(0.1)
    deleted = [url for method, url in whep_tab.requests if method == "DELETE"]
    assert len(deleted) == 1 and deleted[0].startswith(f"{whep_tab.server}/whep/{sid}/")
    assert keyed_api.get(f"/webrtc/sessions/{sid}").status_code == 200  # the session stays
    assert whep_tab.blocked == []
