"""Pages written from the vendors' documented streaming protocols drive D-ID's
`/talks/streams` (D-ID's streaming demo: create, sdp, ice, talk, delete, and the
`JanusDataChannel` the page creates) and TWIN's stream package in headless Chromium:
connect, idle video, speak text (the mouth moves, stream/started then stream/done),
interrupt with `stream/interrupt`, delete. Any host other than the page's and the
server's is blocked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.conftest import why_browser_tests_cannot_run
from tests.browser.test_did_client_sdk import SdkTab
from tests.browser.page_site import PageSite, cannot_run, server_for
from tests.live_server import LiveServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.webrtc

KEY = "vendor-pages-browser-key-0123456789"
SHORT = "Hello there, nice to meet you."
LONG = "This is a long answer that goes on and on, " * 4 + "and it ends here."
OPEN_MOUTH = 0.2

PAGE = """<!doctype html><html><head><style>html, body { margin: 0; background: #000; }
video { display: block; width: 512px; height: 512px; }</style></head>
<body><video id="video" autoplay muted playsinline></video>
<script type="module">
const query = new URLSearchParams(location.hash.slice(1));
const base = query.get("url"), surface = query.get("surface");
const video = document.getElementById("video");
window.vt = { events: [], error: null, connection: null, connection_log: [], errors: [] };
const call = async (path, body, method = "POST") => {
  const response = await fetch(base + path, {
    method, body: JSON.stringify(body),
    headers: { Authorization: "Basic " + query.get("key"), "Content-Type": "application/json" },
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(response.status + " " + JSON.stringify(answer));
  return answer;
};
const twin = "/v1/stream-package";
const calls = surface === "twin" ? {
  create: () => call(`${twin}/setupConnection`, { twinId: "demo", responseResolution: 512 }),
  sdp: (s, answer) => call(`${twin}/startConnection`, { streamId: s.id, sessionId: s.session_id, answer }),
  ice: (s, c) => call(`${twin}/sendNetworkInfo`, { streamId: s.id, sessionId: s.session_id, ...c }),
  talk: (s, input) => call(`${twin}/startStream`, { streamId: s.id, sessionId: s.session_id, input, twinId: "demo" }),
  remove: (s) => call(`${twin}/deleteStream`, { streamId: s.id, sessionId: s.session_id }),
} : {
  create: () => call("/talks/streams", { source_url: "https://example.invalid/images/demo.jpg" }),
  sdp: (s, answer) => call(`/talks/streams/${s.id}/sdp`, { answer, session_id: s.session_id }),
  ice: (s, c) => call(`/talks/streams/${s.id}/ice`, { ...c, session_id: s.session_id }),
  talk: (s, input) => call(`/talks/streams/${s.id}`, {
    script: { type: "text", input, provider: { type: "microsoft", voice_id: "en-US-JennyNeural" } },
    config: { fluent: true, pad_audio: 0 }, session_id: s.session_id }),
  remove: (s) => call(`/talks/streams/${s.id}`, { session_id: s.session_id }, "DELETE"),
};
try {
  const stream = await calls.create();
  const pc = new RTCPeerConnection({ iceServers: stream.ice_servers });
  pc.onicecandidate = (event) => {
    const c = event.candidate;
    calls.ice(stream, c ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } : {})
      .catch((e) => vt.errors.push(String(e)));
  };
  pc.ontrack = (event) => { if (event.streams[0]) video.srcObject = event.streams[0]; };
  pc.onconnectionstatechange = () => { vt.connection = pc.connectionState; };
  const channel = pc.createDataChannel("JanusDataChannel");
  channel.onmessage = (message) => {
    const [subject, payload] = message.data.split(/:(.+)/);
    vt.events.push({ subject, payload: payload ? JSON.parse(payload) : null });
  };
  await pc.setRemoteDescription(stream.offer);
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  await calls.sdp(stream, { type: answer.type, sdp: answer.sdp });
  vt.talk = (text) => calls.talk(stream, text);
  vt.interrupt = () => channel.send("stream/interrupt");
  vt.remove = () => calls.remove(stream);
  vt.stream_id = stream.id;
} catch (e) { vt.error = String((e && e.stack) || e); }
</script></body></html>
"""


def _cannot_run(reason: str) -> None:
    cannot_run("vendor stream page test", reason)


@pytest.fixture(scope="module")
def site() -> Iterator[PageSite]:
    reason = why_browser_tests_cannot_run()
    if reason is not None:
        _cannot_run(reason)
    page_site = PageSite({"index.html": PAGE.encode()})
    yield page_site
    page_site.close()


@pytest.fixture(scope="module")
def server(site: PageSite) -> Iterator[LiveServer]:
    with server_for(site, KEY) as live:
        yield live


class StreamTab(SdkTab):
    def state(self) -> dict[str, Any]:
        return self.page.evaluate(
            """() => ({ connection: vt.connection, events: vt.events, errors: vt.errors,
                        error: vt.error, stream_id: vt.stream_id,
                        width: document.getElementById("video").videoWidth,
                        time: document.getElementById("video").currentTime })"""
        )

    def subjects(self, video_id: str) -> list[str]:
        return [
            e["subject"] for e in self.state()["events"]
            if (e["payload"] or {}).get("metadata", {}).get("videoId") == video_id
        ]

    def talk(self, text: str) -> dict[str, Any]:
        return self.page.evaluate(f"async () => await vt.talk({text!r})")

    def mouth_opens(self, timeout: float = 3.0) -> float:
        opened = [self.mouth()]
        deadline = time.monotonic() + timeout
        while max(opened) <= OPEN_MOUTH and time.monotonic() < deadline:
            self.page.wait_for_timeout(50)
            opened.append(self.mouth())
        return max(opened)


@pytest.fixture
def tab(chromium: Browser, site: PageSite, server: LiveServer) -> Iterator[StreamTab]:
    stream_tab = StreamTab(chromium, site, server.url)
    yield stream_tab
    stream_tab.context.close()


@pytest.mark.parametrize("surface", ["did-talks", "twin"])
def test_a_page_of_the_documented_protocol_connects_speaks_interrupts_and_deletes(
    tab: StreamTab, server: LiveServer, surface: str
) -> None:
    tab.page.goto(f"{tab.site.origin}/index.html#surface={surface}&key={KEY}&url={server.url}")
    state = tab.wait_for(lambda s: s["connection"] == "connected" and s["events"], 20)
    assert state["events"][0]["subject"] == "stream/ready"
    tab.wait_for(lambda s: s["width"] == 512 and s["time"] > 0.5, 10)
    idle = tab.mouth()

    short = tab.talk(SHORT)
    assert short["status"] == "started", short
    tab.wait_for(lambda s: "stream/started" in tab.subjects(short["video_id"]), 10)
    speaking = tab.mouth_opens()
    tab.wait_for(lambda s: "stream/done" in tab.subjects(short["video_id"]), short["duration"] + 5)

    long = tab.talk(LONG)
    tab.wait_for(lambda s: "stream/started" in tab.subjects(long["video_id"]), 10)
    tab.page.wait_for_timeout(500)
    tab.page.evaluate("() => vt.interrupt()")
    cut = time.monotonic()
    tab.wait_for(lambda s: "stream/done" in tab.subjects(long["video_id"]), 3)
    assert time.monotonic() - cut < 2 < long["duration"] - 2

    removed = tab.page.evaluate("async () => await vt.remove()")
    assert removed["session_id"], removed
    stream_id = tab.state()["stream_id"]
    assert server.call(_ended(server, stream_id))
    assert idle < 0.05 and speaking > OPEN_MOUTH, (idle, speaking)
    assert tab.state()["errors"] == [] and tab.blocked == [], (tab.state(), tab.blocked)


async def _ended(server: LiveServer, stream_id: str) -> bool:
    return server.app.state.server.sessions.find(stream_id) is None
