"""The session API over HTTP: parameters, look-ups, limits and every refusal."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import make_settings, running_app

OFFER_WITHOUT_VIDEO = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\na=rtcp-mux\r\n"
)


async def create(http: httpx.AsyncClient, **params: object) -> dict:
    response = await http.post("/webrtc/sessions/create", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_create_returns_the_effective_defaults(http: httpx.AsyncClient) -> None:
    session = await create(http)
    assert session["fps"] == 10
    assert session["playback_fps"] == 15
    assert session["batch_size"] == 2
    assert session["chunk_duration"] == 2.0
    assert session["avatar_id"] == "demo"
    assert session["engine"] == "demo"
    assert session["player_url"] == (
        f"http://testserver/player/{session['session_id']}?token={session['session_token']}"
    )
    assert session["ice_servers"] == []


async def test_create_takes_its_parameters(http: httpx.AsyncClient) -> None:
    session = await create(http, user_id="u-42", fps=25, playback_fps=30, batch_size=8, chunk_duration=0.5)
    assert (session["user_id"], session["fps"], session["playback_fps"]) == ("u-42", 25, 30)
    assert (session["batch_size"], session["chunk_duration"]) == (8, 0.5)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"fps": 0}, "fps"),
        ({"fps": 61}, "fps"),
        ({"playback_fps": "fast"}, "playback_fps"),
        ({"batch_size": 65}, "batch_size"),
        ({"chunk_duration": 0.1}, "chunk_duration"),
        ({"avatar_id": "../etc"}, "avatar_id"),
    ],
)
async def test_bad_parameters_are_422_naming_the_field(http: httpx.AsyncClient, params: dict, field: str) -> None:
    response = await http.post("/webrtc/sessions/create", params=params)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(f"Invalid request: {field}:")


async def test_unknown_avatar_is_404_listing_the_available_ones(http: httpx.AsyncClient) -> None:
    response = await http.post("/webrtc/sessions/create", params={"avatar_id": "nobody"})
    assert response.status_code == 404
    assert "nobody" in response.json()["detail"]
    assert response.json()["available_avatars"] == ["demo"]


@pytest.mark.parametrize(
    ("method", "suffix", "kwargs"),
    [
        ("GET", "", {}),
        ("DELETE", "", {}),
        ("POST", "/offer", {"json": {"sdp": "v=0", "type": "offer"}}),
        ("POST", "/ice", {"json": {"candidate": ""}}),
        ("POST", "/stream", {"files": {"audio_file": ("a.wav", b"RIFF", "audio/wav")}}),
    ],
)
async def test_unknown_session_is_404_everywhere(http: httpx.AsyncClient, method: str, suffix: str, kwargs: dict) -> None:
    response = await http.request(method, f"/webrtc/sessions/no-such-session{suffix}", **kwargs)
    assert response.status_code == 404
    assert "does not exist" in response.json()["detail"]


async def test_get_describes_a_waiting_session(http: httpx.AsyncClient) -> None:
    session = await create(http, user_id="someone")
    info = (await http.get(f"/webrtc/sessions/{session['session_id']}")).json()
    assert info["state"] == "waiting"
    assert info["connection_state"] == "none"
    assert info["user_id"] == "someone"
    assert info["utterance"] is None
    assert info["ice_servers"] == []
    assert 0 < info["expires_in_seconds"] <= 600


async def test_stream_before_any_connection_is_409(http: httpx.AsyncClient) -> None:
    session = await create(http)
    response = await http.post(
        f"/webrtc/sessions/{session['session_id']}/stream",
        files={"audio_file": ("a.wav", b"RIFF....WAVE", "audio/wav")},
    )
    assert response.status_code == 409
    assert "player_url" in response.json()["detail"]


async def test_candidate_before_the_offer_is_409(http: httpx.AsyncClient) -> None:
    session = await create(http)
    response = await http.post(
        f"/webrtc/sessions/{session['session_id']}/ice",
        json={"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host", "sdpMid": "0", "sdpMLineIndex": 0},
    )
    assert response.status_code == 409


async def test_malformed_candidate_is_400(http: httpx.AsyncClient) -> None:
    session = await create(http)
    response = await http.post(
        f"/webrtc/sessions/{session['session_id']}/ice", json={"candidate": "candidate:garbage", "sdpMid": "0"}
    )
    assert response.status_code == 400
    assert "Malformed ICE candidate" in response.json()["detail"]


async def test_garbage_offer_is_400_and_the_session_lives_on(http: httpx.AsyncClient) -> None:
    session = await create(http)
    response = await http.post(
        f"/webrtc/sessions/{session['session_id']}/offer", json={"sdp": "not sdp at all", "type": "offer"}
    )
    assert response.status_code == 400
    assert (await http.get(f"/webrtc/sessions/{session['session_id']}")).status_code == 200


async def test_an_answer_instead_of_an_offer_is_400(http: httpx.AsyncClient) -> None:
    session = await create(http)
    response = await http.post(
        f"/webrtc/sessions/{session['session_id']}/offer", json={"sdp": OFFER_WITHOUT_VIDEO, "type": "answer"}
    )
    assert response.status_code == 400
    assert "offer" in response.json()["detail"]


async def test_offer_without_video_is_400(http: httpx.AsyncClient) -> None:
    session = await create(http)
    response = await http.post(
        f"/webrtc/sessions/{session['session_id']}/offer", json={"sdp": OFFER_WITHOUT_VIDEO, "type": "offer"}
    )
    assert response.status_code == 400
    assert "audio and video" in response.json()["detail"]


async def test_delete_ends_the_session(http: httpx.AsyncClient) -> None:
    session = await create(http)
    url = f"/webrtc/sessions/{session['session_id']}"
    response = await http.delete(url)
    assert response.status_code == 200
    assert response.json() == {"session_id": session["session_id"], "state": "closed"}
    assert (await http.get(url)).status_code == 404
    assert (await http.delete(url)).status_code == 404
    avatars = http.app.state.server.avatars
    assert avatars.users("demo") == 0


async def test_session_limit_is_503() -> None:
    async with running_app(make_settings(max_sessions=2)) as http:
        await create(http)
        await create(http)
        response = await http.post("/webrtc/sessions/create")
        assert response.status_code == 503
        assert "limit of 2 sessions" in response.json()["detail"]


async def test_idle_sessions_expire() -> None:
    async with running_app(make_settings(session_idle_ttl_seconds=0.4)) as http:
        session = await create(http)
        url = f"/webrtc/sessions/{session['session_id']}"
        for _ in range(4):  # requests keep it alive
            await asyncio.sleep(0.2)
            assert (await http.get(url)).status_code == 200
        await asyncio.sleep(1.5)
        assert (await http.get(url)).status_code == 404
        assert len(http.app.state.server.sessions) == 0


async def test_health_reports_engine_and_sessions(http: httpx.AsyncClient) -> None:
    await create(http)
    health = (await http.get("/health")).json()
    assert health["engine"] == "demo"
    assert health["sessions"] == 1
    assert health["avatars"] == ["demo"]


async def test_player_page_is_served(http: httpx.AsyncClient) -> None:
    session = await create(http)
    page = await http.get(f"/player/{session['session_id']}")
    assert page.status_code == 200
    assert "player.js" in page.text
    script = await http.get("/player/assets/player.js")
    assert script.status_code == 200
    assert "RTCPeerConnection" in script.text


async def test_ice_servers_come_from_the_settings() -> None:
    settings = make_settings(
        stun_urls=("stun:stun.example.org:3478",),
        turn_urls=("turn:turn.example.org:3478",),
        turn_user="u",
        turn_pass="p",
    )
    async with running_app(settings) as http:
        session = await create(http)
        assert session["ice_servers"] == [
            {"urls": ["stun:stun.example.org:3478"]},
            {"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "p"},
        ]


async def test_cross_origin_calls_are_allowed_only_for_configured_origins() -> None:
    preflight = {"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST"}
    async with running_app(make_settings(cors_allow_origins=("https://app.example.org",))) as http:
        allowed = await http.options("/webrtc/sessions/create", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.org"
        other = await http.options(
            "/webrtc/sessions/create", headers={**preflight, "Origin": "https://evil.example.com"}
        )
        assert "access-control-allow-origin" not in other.headers
    async with running_app(make_settings()) as http:
        response = await http.post("/webrtc/sessions/create", headers={"Origin": "https://app.example.org"})
        assert response.status_code == 403  # server.api.origins
        assert "access-control-allow-origin" not in response.headers
