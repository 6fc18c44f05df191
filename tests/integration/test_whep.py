"""A WHEP player watches a session: offer, trickle, idle video and speech, delete."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from server.media.rtc import restrict_host_addresses
from server.api.whep import MAX_SDP_BYTES
from server.media.sdp_fragment import ice_credentials

from tests.audio_files import encode, speech_like
from tests.conftest import make_settings, running_app
from tests.whep_client import SDP, SDP_FRAGMENT, WhepPeer, fragment, without_candidates

pytestmark = pytest.mark.webrtc

KEY = "whep-test-key-0123456789abcdef"
ORIGIN = "https://player.example"
LOUD = 0.05


async def create(http: httpx.AsyncClient, **headers: str) -> dict:
    response = await http.post("/webrtc/sessions/create", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def wait_until(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_an_offer_is_answered_201_sendonly_with_location_etag_and_one_stream(
    http: httpx.AsyncClient,
) -> None:
    sid = (await create(http))["session_id"]
    peer = WhepPeer(http, sid)
    try:
        response = await peer.offer()
        assert response.status_code == 201, response.text
        assert response.headers["content-type"] == SDP
        assert peer.resource is not None
        assert peer.resource.startswith(f"http://testserver/whep/{sid}/")
        assert peer.etag and peer.etag.startswith('"')
        answer = response.text
        media = [s for s in answer.split("m=")[1:]]
        assert [s.split(" ", 1)[0] for s in media] == ["audio", "video"]
        assert all("a=sendonly" in s for s in media)
        streams = {line.split(":", 1)[1].split()[0] for line in answer.splitlines() if line.startswith("a=msid:")}
        assert len(streams) == 1
    finally:
        await peer.close()


async def test_trickled_candidates_connect_and_the_player_sees_idle_video_then_speech(
    http: httpx.AsyncClient,
) -> None:
    sid = (await create(http))["session_id"]
    peer = WhepPeer(http, sid, trickle=True)
    try:
        await peer.connect()
        await wait_until(lambda: len(peer.received.video) > 5 and len(peer.received.audio) > 20, 5)
        idle = len(peer.received.audio)
        assert not any(abs(a.samples).max() > LOUD for a in peer.received.audio)
        upload = await http.post(
            f"/webrtc/sessions/{sid}/stream",
            files={"audio_file": ("s.wav", encode(speech_like(1.6), "wav"), "audio/wav")},
        )
        assert upload.status_code == 200, upload.text
        await wait_until(lambda: any(abs(a.samples).max() > LOUD for a in peer.received.audio[idle:]), 8)
        # The mouth opens with the audio; its frame may arrive a frame or two after it.
        await wait_until(lambda: max(v.mouth_dark for v in peer.received.video) > 0.05, 2)
    finally:
        await peer.close()


async def test_delete_ends_the_connection_and_the_session_stays(http: httpx.AsyncClient) -> None:
    sid = (await create(http))["session_id"]
    peer = WhepPeer(http, sid)
    try:
        await peer.connect()
        assert peer.resource is not None
        deleted = await http.delete(peer.resource)
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["session_id"] == sid
        await wait_until(lambda: peer.pc.connectionState in ("closed", "failed"), 40)
        info = await http.get(f"/webrtc/sessions/{sid}")
        assert info.status_code == 200
        assert info.json()["connection_state"] == "none"
        assert (await http.delete(peer.resource)).status_code == 404
    finally:
        await peer.close()


async def test_a_second_viewer_replaces_the_first_which_is_told(http: httpx.AsyncClient) -> None:
    sid = (await create(http))["session_id"]
    first = WhepPeer(http, sid, events=True)
    second = WhepPeer(http, sid)
    try:
        await first.connect()
        await first.wait_for_event("state", timeout=5)
        await second.connect()
        await first.wait_for_event("connection_replaced", timeout=5)
        old = await first.patch(fragment("u", "p", "0", []))
        assert old.status_code == 404
        assert "POST a new offer" in old.json()["detail"]
        await wait_until(lambda: len(second.received.video) > 3, 5)
    finally:
        await first.close()
        await second.close()


async def test_patch_with_a_stale_if_match_is_412_and_an_ice_restart_is_422(
    http: httpx.AsyncClient,
) -> None:
    sid = (await create(http))["session_id"]
    peer = WhepPeer(http, sid, trickle=True)
    try:
        assert (await peer.offer()).status_code == 201
        stale = await peer.trickle_candidates(**{"If-Match": '"not-this-one"'})
        assert stale.status_code == 412
        restart = await peer.patch(fragment("newufrag", "newpassword0123456789abc", "0", []))
        assert restart.status_code == 422
        assert "ICE restart" in restart.json()["detail"]
        matching = await peer.trickle_candidates(**{"If-Match": peer.etag or ""})
        assert matching.status_code == 204
        await asyncio.wait_for(peer._connected.wait(), 15)
    finally:
        await peer.close()


async def test_an_offer_of_another_content_type_is_415(http: httpx.AsyncClient) -> None:
    sid = (await create(http))["session_id"]
    response = await http.post(f"/whep/{sid}", content="v=0\r\n", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert SDP in response.json()["detail"]


async def test_a_fragment_of_another_content_type_is_415(http: httpx.AsyncClient) -> None:
    sid = (await create(http))["session_id"]
    peer = WhepPeer(http, sid)
    try:
        await peer.connect()
        assert peer.resource is not None
        response = await http.patch(
            peer.resource, content="a=end-of-candidates\r\n", headers={"Content-Type": "text/plain"}
        )
        assert response.status_code == 415
        assert SDP_FRAGMENT in response.json()["detail"]
    finally:
        await peer.close()


async def test_an_offer_that_is_not_sdp_is_400(http: httpx.AsyncClient) -> None:
    sid = (await create(http))["session_id"]
    response = await http.post(f"/whep/{sid}", content="hello", headers={"Content-Type": SDP})
    assert response.status_code == 400
    assert response.json()["detail"]


async def test_an_offer_to_an_unknown_session_is_404(http: httpx.AsyncClient) -> None:
    response = await http.post("/whep/no-such-session", content="v=0\r\n", headers={"Content-Type": SDP})
    assert response.status_code == 404
    assert response.json()["detail"]


async def test_a_keyed_server_wants_a_bearer_key_or_the_sessions_token() -> None:
    async with running_app(make_settings(api_keys=(KEY,))) as http:
        session = await create(http, Authorization=f"Bearer {KEY}")
        sid = session["session_id"]
        refused = await http.post(f"/whep/{sid}", content="v=0\r\n", headers={"Content-Type": SDP})
        assert refused.status_code == 401
        assert refused.json()["detail"]
        http.headers["Authorization"] = f"Bearer {session['session_token']}"
        peer = WhepPeer(http, sid)
        try:
            await peer.connect()
        finally:
            await peer.close()


async def test_a_configured_origin_may_preflight_and_post_and_read_the_headers() -> None:
    async with running_app(make_settings(cors_allow_origins=(ORIGIN,))) as http:
        sid = (await create(http))["session_id"]
        preflight = await http.options(
            f"/whep/{sid}",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": "authorization, content-type, if-match",
            },
        )
        assert preflight.status_code == 200
        assert "PATCH" in preflight.headers["access-control-allow-methods"]
        http.headers["Origin"] = ORIGIN
        peer = WhepPeer(http, sid)
        try:
            response = await peer.offer()
            assert response.status_code == 201, response.text
            exposed = response.headers["access-control-expose-headers"]
            assert {"Location", "ETag", "Link"} <= {h.strip() for h in exposed.split(",")}
        finally:
            await peer.close()
        http.headers["Origin"] = "https://elsewhere.example"
        assert (await http.post(f"/whep/{sid}", content="v=0\r\n", headers={"Content-Type": SDP})).status_code == 403


async def test_options_names_what_the_endpoint_accepts(http: httpx.AsyncClient) -> None:
    response = await http.options("/whep/any-session")
    assert response.status_code == 204
    assert response.headers["accept-post"] == SDP


async def test_the_sessions_ice_servers_are_link_headers_with_its_turn_credentials() -> None:
    settings = make_settings(
        stun_urls=("stun:127.0.0.1:3478",),
        turn_rest_urls=("turn:127.0.0.1:3478?transport=udp",),
        turn_secret="whep-test-secret-0123456789",
    )
    async with running_app(settings) as http:
        session = await create(http)
        peer = WhepPeer(http, session["session_id"])
        try:
            response = await peer.offer()
            assert response.status_code == 201, response.text
        finally:
            await peer.close()
    turn = session["ice_servers"][1]
    assert peer.links == [
        '<stun:127.0.0.1:3478>; rel="ice-server"',
        f'<turn:127.0.0.1:3478?transport=udp>; rel="ice-server"; username="{turn["username"]}"; '
        f'credential="{turn["credential"]}"; credential-type="password"',
    ]


@pytest.mark.parametrize(
    "body",
    [
        "a=candidate:nonsense\r\n",
        "a=candidate:1 1 udp 2122260223 192.0.2.1 notaport typ host\r\n",
        "not an sdp fragment\r\n",
    ],
)
async def test_a_malformed_fragment_is_400_and_keeps_the_connection(
    http: httpx.AsyncClient, body: str
) -> None:
    sid = (await create(http))["session_id"]
    peer = WhepPeer(http, sid)
    try:
        await peer.connect()
        response = await peer.patch(body)
        assert response.status_code == 400, response.text
        assert response.json()["detail"]
        frames = len(peer.received.video)
        await wait_until(lambda: len(peer.received.video) > frames + 2, 5)
        assert peer.pc.connectionState == "connected"
    finally:
        await peer.close()


async def test_an_empty_post_gets_the_servers_offer_and_candidates_then_the_answer_connect(
    http: httpx.AsyncClient,
) -> None:
    sid = (await create(http))["session_id"]
    posted = await http.post(f"/whep/{sid}", content="", headers={"Content-Type": SDP})
    assert posted.status_code == 201, posted.text
    assert posted.text.count("a=sendonly") == 2
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    connected = asyncio.Event()
    pc.on("connectionstatechange", lambda: connected.set() if pc.connectionState == "connected" else None)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=posted.text, type="offer"))
        answer = await pc.createAnswer()
        restrict_host_addresses(pc, ("127.0.0.1",))
        await pc.setLocalDescription(answer)
        sdp, candidates = without_candidates(pc.localDescription.sdp)
        ufrag, pwd = ice_credentials(sdp)
        early = await http.patch(  # before the answer: kept, then applied after it
            posted.headers["Location"],
            content=fragment(ufrag or "", pwd or "", "0", candidates),
            headers={"Content-Type": SDP_FRAGMENT},
        )
        assert early.status_code == 204, early.text
        patched = await http.patch(posted.headers["Location"], content=sdp, headers={"Content-Type": SDP})
        assert patched.status_code == 204, patched.text
        await asyncio.wait_for(connected.wait(), 15)
        again = await http.patch(
            posted.headers["Location"], content=pc.localDescription.sdp, headers={"Content-Type": SDP}
        )
        assert again.status_code == 409
    finally:
        await pc.close()


async def test_an_offer_over_the_size_limit_is_413(http: httpx.AsyncClient) -> None:
    sid = (await create(http))["session_id"]
    body = "a=x-padding:" + "x" * (MAX_SDP_BYTES + 1)
    response = await http.post(f"/whep/{sid}", content=body, headers={"Content-Type": SDP})
    assert response.status_code == 413
    assert str(MAX_SDP_BYTES) in response.json()["detail"]
