"""Two real server processes behind Debian's nginx running deploy/nginx's config: a create
goes to a node with room (the next node asked when one answers 503), and every later call
of a session (signalling, the player page, events, speech, delete) to the node that owns it."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest

from server.node_ids import node_of
from tests.audio_files import encode, speech_like
from tests.live_server import in_test_network_namespace
from tests.nginx_proxy import NginxProxy, why_nginx_cannot_run
from tests.server_process import CREATE_TIMEOUT_SECONDS, ServerProcess
from tests.speech_streamer import SpeechStreamer, pcm_s16
from tests.sse_client import EventStream, read_events
from tests.webrtc_client import ClientPeer
from tests.whep_client import WhepPeer

pytestmark = pytest.mark.webrtc

NODE_IDS = ("a", "b")  # avatar-nodes.conf's example nodes
API_KEY = "nginx-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
NODE_ENVIRONMENT = {
    "MAX_SESSIONS": "1",  # a second create must find the other node
    "API_KEYS": API_KEY,  # so that the player page and signalling check the session token
    "FORWARDED_ALLOW_IPS": "127.0.0.1",  # the proxy
}
UTTERANCE_SECONDS = 2.0
BURSTS = [(0.3, 0.8), (1.1, 1.6)]
LOUD_RMS = 0.05
STREAM_RATE = 24_000


@dataclass
class Cluster:
    proxy: NginxProxy
    nodes: dict[str, ServerProcess]

    def address(self, node_id: str) -> str:
        return self.nodes[node_id].url.removeprefix("http://")

    def owner_address(self, session_id: str) -> str:
        return self.address(node_of(session_id))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    reason = why_nginx_cannot_run()
    if reason is None and not in_test_network_namespace():
        reason = "not in the test network namespace: run the suite with ./scripts/test"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the proxy test, but {reason}")
        pytest.skip(reason)
    nodes = {node_id: ServerProcess({**NODE_ENVIRONMENT, "NODE_ID": node_id}) for node_id in NODE_IDS}
    proxy = None
    try:
        for node in nodes.values():
            node.start()
        proxy = NginxProxy((nodes["a"].url.removeprefix("http://"), nodes["b"].url.removeprefix("http://")))
        proxy.start()
        # The first session of a run prepares the demo avatar; here, one node at a time.
        for node in nodes.values():
            created = httpx.post(f"{node.url}/webrtc/sessions/create", headers=AUTH, timeout=CREATE_TIMEOUT_SECONDS)
            assert created.status_code == 200, created.text
            httpx.delete(f"{node.url}/webrtc/sessions/{created.json()['session_id']}", headers=AUTH)
        yield Cluster(proxy, nodes)
    finally:
        if proxy is not None:
            proxy.stop()
        for node in nodes.values():
            node.close()


@pytest.fixture
async def http(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the proxy; the sessions it created are deleted after the test."""
    async with httpx.AsyncClient(base_url=cluster.proxy.url, headers=AUTH, timeout=CREATE_TIMEOUT_SECONDS) as client:
        client.created = []  # type: ignore[attr-defined]
        yield client
        for session_id in client.created:  # type: ignore[attr-defined]
            await client.delete(f"/webrtc/sessions/{session_id}")


async def create(http: httpx.AsyncClient) -> httpx.Response:
    response = await http.post("/webrtc/sessions/create")
    if response.status_code == 200:
        http.created.append(response.json()["session_id"])  # type: ignore[attr-defined]
    return response


async def delete(http: httpx.AsyncClient, session_id: str) -> None:
    response = await http.delete(f"/webrtc/sessions/{session_id}")
    assert response.status_code == 200, response.text
    http.created.remove(session_id)  # type: ignore[attr-defined]


async def log_of(cluster: Cluster, method: str, uri: str) -> list:
    return [r for r in await cluster.proxy.settled() if r.method == method and r.uri == uri]


async def test_creates_fill_both_nodes_then_get_the_nodes_own_503(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    first, second = await create(http), await create(http)
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    owners = {node_of(first.json()["session_id"]), node_of(second.json()["session_id"])}
    assert owners == set(NODE_IDS)

    before = len(await log_of(cluster, "POST", "/webrtc/sessions/create"))
    refused = await create(http)
    assert refused.status_code == 503
    direct = httpx.post(f"{cluster.nodes['a'].url}/webrtc/sessions/create", headers=AUTH)
    assert direct.status_code == 503
    # What the last node said, passed on: its sentence and its Retry-After, if it sent one.
    assert refused.json()["detail"] == direct.json()["detail"]
    assert refused.headers.get("retry-after") == direct.headers.get("retry-after")
    [routed] = (await log_of(cluster, "POST", "/webrtc/sessions/create"))[before:]
    assert sorted(routed.upstreams) == sorted(cluster.address(n) for n in NODE_IDS)
    assert routed.upstream_statuses == ("503", "503")


async def test_a_create_is_retried_past_a_full_node_onto_the_one_with_room(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    full = httpx.post(f"{cluster.nodes['b'].url}/webrtc/sessions/create", headers=AUTH)
    assert full.status_code == 200, full.text
    try:
        before = len(await log_of(cluster, "POST", "/webrtc/sessions/create"))
        # Round robin starts each create at the next node: of two creates, one starts at b.
        for _ in range(2):
            created = await create(http)
            assert created.status_code == 200, created.text
            assert node_of(created.json()["session_id"]) == "a"
            await delete(http, created.json()["session_id"])
        routed = (await log_of(cluster, "POST", "/webrtc/sessions/create"))[before:]
        assert sorted(r.upstream_statuses for r in routed) == [("200",), ("503", "200")]
        retried = next(r for r in routed if len(r.upstreams) == 2)
        assert retried.upstreams == (cluster.address("b"), cluster.address("a"))
    finally:
        httpx.delete(f"{cluster.nodes['b'].url}/webrtc/sessions/{full.json()['session_id']}", headers=AUTH)


async def test_a_deleted_session_frees_room_on_its_node(cluster: Cluster, http: httpx.AsyncClient) -> None:
    sessions = [(await create(http)).json()["session_id"] for _ in NODE_IDS]
    assert (await create(http)).status_code == 503
    freed = sessions[0]
    await delete(http, freed)
    again = await create(http)
    assert again.status_code == 200, again.text
    assert node_of(again.json()["session_id"]) == node_of(freed)


def heard_speech(peer: ClientPeer) -> float:
    """The loudest 20 ms of audio the peer received (RMS)."""
    return max((float(np.sqrt(np.mean(a.samples**2))) for a in peer.received.audio), default=0.0)


async def test_every_later_call_of_a_session_reaches_the_node_that_owns_it(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    sessions = [(await create(http)).json() for _ in NODE_IDS]
    assert {node_of(s["session_id"]) for s in sessions} == set(NODE_IDS)
    for session in sessions:
        sid = session["session_id"]
        assert session["player_url"].startswith(f"{cluster.proxy.url}/player/{sid}?token=")

        info = await http.get(f"/webrtc/sessions/{sid}")
        assert info.status_code == 200 and info.json()["session_id"] == sid

        # The player page with the session token and no key; a wrong token is refused by
        # the owner (another node, not knowing the session, would serve the page).
        async with httpx.AsyncClient(base_url=cluster.proxy.url) as browser:
            page = await browser.get(session["player_url"].removeprefix(cluster.proxy.url))
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            wrong = await browser.get(f"/player/{sid}", params={"token": "x" * 43})
            assert wrong.status_code == 403, wrong.text

        events = EventStream()
        reader = asyncio.create_task(read_events(http, sid, events))
        peer = ClientPeer(http, sid, trickle=True)  # offer and ice through the proxy
        try:
            await peer.connect()
            speech = speech_like(UTTERANCE_SECONDS, bursts=BURSTS)
            uploaded = await http.post(
                f"/webrtc/sessions/{sid}/stream",
                files={"audio_file": ("speech.wav", encode(speech, "wav"), "application/octet-stream")},
            )
            assert uploaded.status_code == 200, uploaded.text
            started = await events.wait_for("speaking_started", timeout=10)
            ended = await events.wait_for("speaking_ended", timeout=UTTERANCE_SECONDS + 10)
            # Unbuffered: each event arrives when it happens, not when a buffer fills.
            assert ended["arrival"] - started["arrival"] > UTTERANCE_SECONDS / 2
            assert heard_speech(peer) > LOUD_RMS

            # Streamed speech over the WebSocket, through the proxy's upgrade.
            async with SpeechStreamer(cluster.proxy.url, sid, headers=AUTH) as streamer:
                await streamer.send_json(
                    {"type": "start", "format": "pcm_s16le", "sample_rate": STREAM_RATE, "channels": 1}
                )
                await streamer.wait_for("accepted", timeout=5)
                await streamer.send_bytes(pcm_s16(speech_like(1.0, rate=STREAM_RATE, bursts=[(0.2, 0.8)])))
                await streamer.send_json({"type": "end"})
                await streamer.wait_for("speaking_ended", timeout=10)
        finally:
            await peer.close()
        await delete(http, sid)
        await asyncio.wait_for(reader, 10)  # the owner ends the event stream on delete
        assert (await http.get(f"/webrtc/sessions/{sid}")).status_code == 404

    for session in sessions:
        sid = session["session_id"]
        calls = [r for r in await cluster.proxy.settled() if sid in r.uri]
        kinds = {(r.method, r.uri.split("?")[0].removeprefix(f"/webrtc/sessions/{sid}")) for r in calls}
        assert {("GET", ""), ("GET", f"/player/{sid}"), ("GET", "/events"), ("POST", "/offer"),
                ("POST", "/ice"), ("POST", "/stream"), ("GET", "/speech"), ("DELETE", "")} <= kinds
        assert {r.upstreams for r in calls} == {(cluster.owner_address(sid),)}


def heygen_body(session_id: str) -> dict[str, str]:
    return {"session_id": session_id, "text": "hello"}


def twin_body(session_id: str) -> dict[str, str]:
    """TWIN names the stream (our session) in `streamId`; its `sessionId` is a random
    value of the vendor surface that names no node."""
    return {"streamId": session_id, "sessionId": secrets.token_urlsafe(16), "input": "hello"}


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/streaming.task", heygen_body), ("/v1/streaming.stop", heygen_body),
     ("/v1/stream-package/startStream", twin_body), ("/v1/stream-package/sendNetworkInfo", twin_body)],
)
async def test_a_vendor_call_naming_its_session_in_the_body_reaches_its_node(
    cluster: Cluster, http: httpx.AsyncClient, path: str, body: Callable[[str], dict[str, str]]
) -> None:
    for node_id in NODE_IDS:
        await http.post(path, json=body(f"{node_id}.someSessionId123"))
        routed = [r for r in await cluster.proxy.settled() if r.uri == path][-1]
        assert routed.upstreams == (cluster.address(node_id),)


async def test_a_path_addressed_vendor_call_reaches_the_node_named_by_its_id(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    for path in ("/talks/streams/b.x1/sdp", "/clips/streams/b.x2", "/agents/agt_1/streams/b.x3/ice"):
        await http.post(path, json={"session_id": "b.x"})
        [routed] = await log_of(cluster, "POST", path)
        assert routed.upstreams == (cluster.address("b"),)


async def test_a_session_id_naming_an_unknown_node_is_refused_by_the_proxy(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    response = await http.get("/webrtc/sessions/zz.someSessionId123")
    assert response.status_code == 404
    assert "node" in response.json()["detail"]
    [routed] = await log_of(cluster, "GET", "/webrtc/sessions/zz.someSessionId123")
    assert routed.upstreams == ("-",)


async def test_avatar_calls_go_to_the_node_that_prepares_avatars(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    for _ in range(2):
        assert (await http.get("/avatars")).status_code == 200
    assert {r.upstreams for r in await log_of(cluster, "GET", "/avatars")} == {(cluster.address("a"),)}


async def test_a_render_is_fetched_from_the_node_that_made_it(cluster: Cluster, http: httpx.AsyncClient) -> None:
    speech = encode(speech_like(0.5), "wav")
    owners = set()
    for _ in NODE_IDS:  # round robin: one render on each node
        submitted = await http.post("/renders", files={"audio_file": ("speech.wav", speech)})
        assert submitted.status_code == 202, submitted.text
        render_id = submitted.json()["render_id"]
        owners.add(node_of(render_id))
        assert (await http.get(f"/renders/{render_id}")).status_code == 200
        assert (await http.delete(f"/renders/{render_id}")).status_code in (200, 204)
        calls = [r for r in await cluster.proxy.settled() if render_id in r.uri]
        assert len(calls) == 2
        assert {r.upstreams for r in calls} == {(cluster.owner_address(render_id),)}
    assert owners == set(NODE_IDS)


async def test_a_whep_player_watches_a_session_through_the_proxy(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    sessions = [(await create(http)).json()["session_id"] for _ in NODE_IDS]
    for sid in sessions:
        peer = WhepPeer(http, sid, trickle=True)  # POST the offer, PATCH the candidates
        try:
            await peer.connect()
            assert peer.resource is not None and peer.resource.startswith(f"{cluster.proxy.url}/whep/{sid}/")
            deadline = asyncio.get_running_loop().time() + 10
            while len(peer.received.video) < 5:
                assert asyncio.get_running_loop().time() < deadline, "no video through WHEP"
                await asyncio.sleep(0.05)
            assert (await http.delete(peer.resource)).status_code == 200
        finally:
            await peer.close()
        calls = [r for r in await cluster.proxy.settled() if r.uri.startswith(f"/whep/{sid}")]
        assert sorted(r.method for r in calls) == ["DELETE", "PATCH", "POST"]
        assert {r.upstreams for r in calls} == {(cluster.owner_address(sid),)}
