"""Access: API keys on control calls, the session token on the player and its signalling,
allowed host names, cross-site refusal and the pages' security headers."""

from __future__ import annotations

import base64
import logging
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from server.api.refuse import POLICY_VIOLATION
from server.app import create_app
from server.settings import Settings
from tests.conftest import TEST_ENVIRONMENT, make_settings, running_app
from tests.live_server import LiveServer

KEY = "test-key-0123456789abcdef"
PAIR_KEY = "avatar-user:0123456789abcdef"  # a key in Basic's user:password form
WRONG_KEY = "not-a-key-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {KEY}"}

# Routes anyone may call: the demo page, the alive check and the API description. Every
# other route must refuse a call without credentials (test below), so that a new route
# added without protection fails this suite.
PUBLIC_PATHS = {"/", "/health", "/ready", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
# OPTIONS says what an endpoint accepts (WHEP's Accept-Post), nothing about a session:
# browsers send their preflights without credentials.
PUBLIC_METHODS = {"OPTIONS"}
SIGNALLING_PATHS = {
    "/player/{session_id}",
    "/webrtc/sessions/{session_id}",
    "/webrtc/sessions/{session_id}/offer",
    "/webrtc/sessions/{session_id}/ice",
}


def keyed_settings(**overrides: object) -> Settings:
    return make_settings(api_keys=(KEY, PAIR_KEY), **overrides)


@pytest.fixture
async def keyed() -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(keyed_settings()) as client:
        yield client


async def create(http: httpx.AsyncClient, headers: dict[str, str] | None = None) -> dict:
    response = await http.post("/webrtc/sessions/create", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def routes(app: FastAPI) -> Iterator[tuple[object, str, set[str]]]:
    """(route, path, methods) of every route, those of included routers too."""
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI includes routers lazily
    except ImportError:
        for route in app.routes:
            yield route, getattr(route, "path", ""), set(getattr(route, "methods", None) or ())
        return
    for context in iter_route_contexts(app.routes):
        yield context.original_route, context.path or "", set(context.methods or ())


def refusal_text(body: dict) -> str:
    """The sentence of a refusal: native `detail`, or a vendor's (D-ID's `description`,
    HeyGen's `message`)."""
    return body.get("detail") or body.get("description") or body["message"]


def fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "some-id", path)


def control_and_signalling_calls(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path) of every HTTP route that is not public, path parameters filled in."""
    for route, path, methods in routes(app):
        if isinstance(route, APIRoute) and path not in PUBLIC_PATHS:
            for method in sorted(set(methods) - PUBLIC_METHODS):
                yield method, fill(path)


# --- API keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEY}"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": f"Basic {KEY}~some-suffix"},
        {"Authorization": f"Basic {base64.b64encode(PAIR_KEY.encode()).decode()}"},
        {"Authorization": f"Basic {base64.b64encode(f'{KEY}:'.encode()).decode()}"},
        {"Authorization": f"bearer {KEY}"},
        {"X-Api-Key": KEY},
    ],
    ids=["bearer", "basic", "basic-suffix", "basic-user-pass", "basic-key-colon", "lowercase", "x-api-key"],
)
async def test_each_form_of_the_key_is_accepted(keyed: httpx.AsyncClient, headers: dict) -> None:
    assert (await keyed.get("/avatars", headers=headers)).status_code == 200
    assert (await keyed.post("/webrtc/sessions/create", headers=headers)).status_code == 200


async def test_every_non_public_route_without_a_key_is_401_with_a_sentence(
    keyed: httpx.AsyncClient,
) -> None:
    calls = list(control_and_signalling_calls(keyed.app))
    assert ("POST", "/webrtc/sessions/create") in calls and ("DELETE", "/avatars/some-id") in calls
    for method, path in calls:
        response = await keyed.request(method, path)
        assert response.status_code == 401, (method, path, response.text)
        assert "needs" in refusal_text(response.json()), (method, path)
        assert response.headers["www-authenticate"].startswith("Bearer"), (method, path)


async def test_every_non_public_route_with_a_wrong_key_is_401_naming_the_settings(
    keyed: httpx.AsyncClient,
) -> None:
    for method, path in control_and_signalling_calls(keyed.app):
        response = await keyed.request(method, path, headers={"X-Api-Key": WRONG_KEY})
        assert response.status_code == 401, (method, path)
        assert "API_KEYS" in refusal_text(response.json())


def test_every_websocket_route_without_a_key_is_closed_with_policy_violation() -> None:
    app = create_app(keyed_settings())
    with TestClient(app) as client:
        for route, path, _ in routes(app):
            if isinstance(route, APIWebSocketRoute):
                with pytest.raises(WebSocketDisconnect) as closed:
                    with client.websocket_connect(fill(path)) as websocket:
                        websocket.receive_text()
                assert closed.value.code == POLICY_VIOLATION, path


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {KEY[:-1]}", f"Basic {KEY[1:]}", f"Basic {base64.b64encode(b'avatar-user:wrong').decode()}", "Bearer", KEY],
)
async def test_near_misses_are_refused(keyed: httpx.AsyncClient, authorization: str) -> None:
    response = await keyed.get("/avatars", headers={"Authorization": authorization})
    assert response.status_code == 401


async def test_health_without_a_key_only_says_alive(keyed: httpx.AsyncClient) -> None:
    assert (await keyed.get("/health")).json() == {"status": "ok"}
    detailed = (await keyed.get("/health", headers=BEARER)).json()
    assert detailed["engine"] == "demo" and detailed["avatars"] == ["demo"]


async def test_an_open_server_takes_control_calls_without_a_key(http: httpx.AsyncClient) -> None:
    session = await create(http)
    assert (await http.delete(f"/webrtc/sessions/{session['session_id']}")).status_code == 200
    assert "engine" in (await http.get("/health")).json()


async def test_the_openapi_description_declares_the_credentials_and_the_401(
    keyed: httpx.AsyncClient,
) -> None:
    schema = (await keyed.get("/openapi.json")).json()
    assert {"HTTPBearer", "APIKeyHeader", "SessionToken"} <= set(schema["components"]["securitySchemes"])
    assert "401" in schema["paths"]["/webrtc/sessions/create"]["post"]["responses"]
    assert "403" in schema["paths"]["/webrtc/sessions/{session_id}/offer"]["post"]["responses"]


# --- the session token ---------------------------------------------------------------


async def test_player_url_carries_the_session_token_which_is_unguessable(
    keyed: httpx.AsyncClient,
) -> None:
    first, second = await create(keyed, BEARER), await create(keyed, BEARER)
    assert first["player_url"].endswith(f"/player/{first['session_id']}?token={first['session_token']}")
    assert len(first["session_token"]) >= 43
    assert first["session_token"] != second["session_token"]


@pytest.mark.parametrize(
    "how",
    ["query", "header", "bearer"],
)
async def test_the_player_and_its_signalling_take_the_sessions_token(
    keyed: httpx.AsyncClient, how: str
) -> None:
    session = await create(keyed, BEARER)
    sid, token = session["session_id"], session["session_token"]
    params = {"token": token} if how == "query" else None
    headers = {
        "query": {},
        "header": {"X-Session-Token": token},
        "bearer": {"Authorization": f"Bearer {token}"},
    }[how]
    get = await keyed.get(f"/webrtc/sessions/{sid}", params=params, headers=headers)
    assert get.status_code == 200
    page = await keyed.get(f"/player/{sid}", params=params, headers=headers)
    assert page.status_code == 200 and "player.js" in page.text
    # Past the access check, each call meets the session's own refusals.
    offer = await keyed.post(
        f"/webrtc/sessions/{sid}/offer", params=params, headers=headers, json={"sdp": "v=0", "type": "offer"}
    )
    assert offer.status_code == 400
    ice = await keyed.post(
        f"/webrtc/sessions/{sid}/ice", params=params, headers=headers,
        json={"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host", "sdpMid": "0"},
    )
    assert ice.status_code == 409


async def test_signalling_also_takes_an_api_key_for_native_clients(keyed: httpx.AsyncClient) -> None:
    session = await create(keyed, BEARER)
    response = await keyed.get(f"/webrtc/sessions/{session['session_id']}", headers={"X-Api-Key": KEY})
    assert response.status_code == 200


async def test_signalling_without_a_token_is_401_on_a_server_with_keys(keyed: httpx.AsyncClient) -> None:
    session = await create(keyed, BEARER)
    for method, suffix in (("GET", ""), ("POST", "/offer"), ("POST", "/ice")):
        response = await keyed.request(method, f"/webrtc/sessions/{session['session_id']}{suffix}")
        assert response.status_code == 401
        assert "token" in response.json()["detail"]
    assert (await keyed.get(f"/player/{session['session_id']}")).status_code == 401


@pytest.mark.parametrize("with_keys", [True, False], ids=["keys", "open"])
async def test_a_token_of_another_session_is_refused(with_keys: bool) -> None:
    settings = keyed_settings() if with_keys else make_settings()
    async with running_app(settings) as http:
        mine, other = await create(http, BEARER), await create(http, BEARER)
        token = {"token": other["session_token"]}
        url = f"/webrtc/sessions/{mine['session_id']}"
        for response in (
            await http.get(url, params=token),
            await http.post(f"{url}/offer", params=token, json={"sdp": "v=0", "type": "offer"}),
            await http.post(f"{url}/ice", params=token, json={"candidate": ""}),
            await http.get(f"/player/{mine['session_id']}", params=token),
        ):
            assert response.status_code == 403
            assert "player_url" in response.json()["detail"]


async def test_the_token_opens_no_control_call(keyed: httpx.AsyncClient) -> None:
    session = await create(keyed, BEARER)
    token = {"Authorization": f"Bearer {session['session_token']}"}
    url = f"/webrtc/sessions/{session['session_id']}"
    assert (await keyed.delete(url, headers=token)).status_code == 401
    assert (await keyed.post(f"{url}/stream", headers=token)).status_code == 401
    assert (await keyed.get("/avatars", headers=token)).status_code == 401


async def test_the_token_is_gone_when_the_session_ends(keyed: httpx.AsyncClient) -> None:
    session = await create(keyed, BEARER)
    url = f"/webrtc/sessions/{session['session_id']}"
    token = {"token": session["session_token"]}
    assert (await keyed.get(url, params=token)).status_code == 200
    assert (await keyed.delete(url, headers=BEARER)).status_code == 200
    assert (await keyed.get(url, params=token)).status_code == 404
    offer = await keyed.post(f"{url}/offer", params=token, json={"sdp": "v=0", "type": "offer"})
    assert offer.status_code == 404


async def test_an_open_server_takes_signalling_without_a_token_but_not_a_wrong_one(
    http: httpx.AsyncClient,
) -> None:
    session = await create(http)
    url = f"/webrtc/sessions/{session['session_id']}"
    assert (await http.get(url)).status_code == 200
    assert (await http.get(url, params={"token": "guessed"})).status_code == 403


def test_the_token_and_the_key_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    collect = Collect()
    server = LiveServer(keyed_settings(), host="127.0.0.1", log_level="info").start()
    access_log = logging.getLogger("uvicorn.access")
    access_log.addHandler(collect)
    try:
        with httpx.Client(base_url=server.url, timeout=15.0) as client, caplog.at_level(logging.DEBUG):
            session = client.post("/webrtc/sessions/create", headers=BEARER).json()
            token = session["session_token"]
            assert client.get(session["player_url"]).status_code == 200
            assert client.get(f"/webrtc/sessions/{session['session_id']}", params={"token": token}).status_code == 200
            client.delete(f"/webrtc/sessions/{session['session_id']}", headers=BEARER)
    finally:
        access_log.removeHandler(collect)
        server.stop()
    assert any(f"/player/{session['session_id']}?token=[redacted]" in line for line in lines), lines
    # The server's own loggers; this test's HTTP client (httpx) logs the URLs it calls.
    server_side = [r.getMessage() for r in caplog.records if r.name.startswith(("server", "uvicorn"))]
    everything = "\n".join([*lines, *server_side])
    assert session["session_id"] in everything
    assert token not in everything
    assert KEY not in everything


async def test_the_log_says_plainly_when_the_server_is_open(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="server"):
        async with running_app(make_settings()):
            pass
        async with running_app(keyed_settings()):
            pass
    messages = [r.getMessage() for r in caplog.records if r.name == "server.app"]
    assert any("the server is OPEN: no API keys" in m for m in messages)
    assert any("API keys: 2" in m for m in messages)


# --- host names ----------------------------------------------------------------------


@asynccontextmanager
async def client_at(settings: Settings, base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """Like running_app, but connected to `base_url` (the ASGI scope's server address)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


async def test_a_host_not_allowed_is_400_and_never_reaches_player_url(http: httpx.AsyncClient) -> None:
    response = await http.post("/webrtc/sessions/create", headers={"Host": "attacker.example"})
    assert response.status_code == 400
    assert "ALLOWED_HOSTS" in response.json()["detail"]
    assert len(http.app.state.server.sessions) == 0
    for path in ("/", "/health", "/player/x", "/player/assets/player.js"):
        assert (await http.get(path, headers={"Host": "attacker.example:8000"})).status_code == 400


async def test_a_rebound_name_on_loopback_is_400() -> None:
    async with client_at(make_settings(), "http://127.0.0.1:8000") as http:
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/health", headers={"Host": "rebound.attacker.example:8000"})).status_code == 400


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1", "[::1]:8000", "LOCALHOST", "127.0.0.5:80"])
async def test_loopback_names_are_allowed(http: httpx.AsyncClient, host: str) -> None:
    assert (await http.get("/health", headers={"Host": host})).status_code == 200


async def test_the_address_a_connection_arrived_at_is_allowed_another_is_not() -> None:
    async with client_at(make_settings(), "http://10.1.2.3:8000") as http:
        session = (await http.post("/webrtc/sessions/create")).json()
        assert session["player_url"].startswith("http://10.1.2.3:8000/player/")
        assert (await http.get("/health", headers={"Host": "10.9.9.9:8000"})).status_code == 400


async def test_allowed_hosts_lists_names_and_subdomains() -> None:
    settings = make_settings(allowed_hosts=("avatar.example.org", "*.apps.example.org"))
    async with running_app(settings) as http:
        for host in ("avatar.example.org", "eu.apps.example.org:8443"):
            session = await create(http, {"Host": host})
            assert session["player_url"].startswith(f"http://{host}/player/")
        assert (await http.get("/health", headers={"Host": "apps.example.org.evil"})).status_code == 400


async def test_public_url_wins_over_any_allowed_host() -> None:
    settings = make_settings(public_url="https://avatar.example.org/")
    async with running_app(settings) as http:
        session = await create(http, {"Host": "localhost:8000"})
        assert session["player_url"].startswith("https://avatar.example.org/player/")
        assert (await http.get("/health", headers={"Host": "avatar.example.org"})).status_code == 200


# --- cross-site requests -------------------------------------------------------------


async def test_a_simple_cross_origin_post_is_403_and_creates_nothing(http: httpx.AsyncClient) -> None:
    # What a form on another site, or its fetch() without a preflight, sends.
    response = await http.post(
        "/webrtc/sessions/create",
        headers={"Origin": "https://attacker.example", "Content-Type": "application/x-www-form-urlencoded"},
        content=b"avatar_id=demo",
    )
    assert response.status_code == 403
    assert "CORS_ALLOW_ORIGINS" in response.json()["detail"]
    assert len(http.app.state.server.sessions) == 0


async def test_replacing_an_avatar_from_another_site_is_403(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/avatars",
        headers={"Origin": "https://attacker.example"},
        files={"video_file": ("v.mp4", b"not read", "video/mp4")},
        data={"avatar_id": "someone", "force": "true"},
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    "headers",
    [{"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}, {"Origin": "http://testserver.attacker.example"}],
)
async def test_other_cross_site_marks_are_403(http: httpx.AsyncClient, headers: dict) -> None:
    session = await create(http)
    response = await http.delete(f"/webrtc/sessions/{session['session_id']}", headers=headers)
    assert response.status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
        {"Origin": "https://testserver"},  # behind a TLS proxy the server sees http
        {"Sec-Fetch-Site": "none"},
        {},
    ],
)
async def test_same_origin_and_non_browser_posts_pass(http: httpx.AsyncClient, headers: dict) -> None:
    assert (await http.post("/webrtc/sessions/create", headers=headers)).status_code == 200


async def test_a_configured_cors_origin_may_post() -> None:
    async with running_app(make_settings(cors_allow_origins=("https://app.example.org",))) as http:
        response = await http.post("/webrtc/sessions/create", headers={"Origin": "https://app.example.org"})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://app.example.org"


async def test_reads_from_another_origin_are_left_to_cors(http: httpx.AsyncClient) -> None:
    response = await http.get("/health", headers={"Origin": "https://attacker.example"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


# --- security headers ----------------------------------------------------------------


def directives(policy: str) -> dict[str, str]:
    return dict((part.strip().split(" ", 1) + [""])[:2] for part in policy.split(";"))


async def test_the_player_page_sends_a_strict_policy_and_no_referrer(http: httpx.AsyncClient) -> None:
    session = await create(http)
    page = await http.get(session["player_url"])
    policy = directives(page.headers["content-security-policy"])
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert "blob:" in policy["media-src"]
    assert policy["frame-ancestors"] == "'self'"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"


async def test_the_demo_page_may_frame_the_player_only(http: httpx.AsyncClient) -> None:
    page = await http.get("/")
    policy = directives(page.headers["content-security-policy"])
    assert policy["frame-src"] == "'self'" and policy["script-src"] == "'self'"
    assert page.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("asset", ["player.js", "player.css", "demo.js", "demo.css"])
async def test_assets_are_not_sniffed(http: httpx.AsyncClient, asset: str) -> None:
    response = await http.get(f"/player/assets/{asset}")
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("page", ["index.html", "demo.html"])
def test_the_pages_have_no_inline_script_or_style(page: str) -> None:
    html = (Path(__file__).resolve().parents[2] / "player" / page).read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert "<style" not in html and " style=" not in html


@pytest.mark.parametrize(
    ("overrides", "ancestors"),
    [
        ({"player_frame_ancestors": "https://app.example.org"}, "https://app.example.org"),
        ({"cors_allow_origins": ("https://app.example.org",)}, "'self' https://app.example.org"),
    ],
)
async def test_frame_ancestors_follow_the_settings(overrides: dict, ancestors: str) -> None:
    async with running_app(make_settings(**overrides)) as http:
        session = await create(http)
        page = await http.get(session["player_url"])
        assert directives(page.headers["content-security-policy"])["frame-ancestors"] == ancestors


# --- start-up ------------------------------------------------------------------------


def serve(*args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **TEST_ENVIRONMENT, **environment}
    for name in ("API_KEYS", "API_KEYS_FILE", "ALLOW_OPEN_ACCESS"):
        if name not in environment:
            env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "server", "serve", "--port", "1", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )


def test_serve_refuses_every_interface_without_keys_saying_how_to_proceed() -> None:
    result = serve("--host", "0.0.0.0")
    assert result.returncode == 2
    assert "API_KEYS" in result.stderr and "ALLOW_OPEN_ACCESS=1" in result.stderr
    assert "--allow-open" in result.stderr


def test_serve_refuses_an_unreadable_keys_file(tmp_path: Path) -> None:
    result = serve("--host", "0.0.0.0", API_KEYS_FILE=str(tmp_path / "missing"))
    assert result.returncode == 2
    assert "API_KEYS_FILE" in result.stderr
