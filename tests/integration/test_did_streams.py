"""D-ID Streams (`/talks/streams`, `/clips/streams`, `/agents/{id}/streams`) with a real
aiortc client doing what D-ID's streaming demo does; every refusal is D-ID's
`{kind, description}` and leaves the stream working."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.audio_files import encode, speech_like
from tests.conftest import make_settings, running_app
from tests.janus_client import JanusPeer

pytestmark = pytest.mark.webrtc
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="no espeak-ng")

KEY = "did-test-key-0123456789"
BASIC = {"Authorization": f"Basic {KEY}"}
OPEN_MOUTH = 0.08
TEXT = "Hello, I am the avatar, and I am talking to you now."


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(api_keys=(KEY,))
    async with running_app(settings) as client:
        client.headers.update(BASIC)
        yield client


@contextmanager
def audio_host(body: bytes, content_type: str = "audio/wav") -> Iterator[str]:
    """A plain HTTP server on loopback serving `body` at /speech.wav (and redirects)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.startswith("/slow"):
                time.sleep(3)
            if self.path.startswith("/redirect"):
                self.send_response(302)
                self.send_header("Location", self.path.split("to=", 1)[1])
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def connected(http: httpx.AsyncClient, base: str = "/talks/streams", **kwargs: object) -> JanusPeer:
    peer = JanusPeer(http, base, **kwargs)  # type: ignore[arg-type]
    await peer.connect()
    await peer.wait_for_janus("stream/ready", timeout=5)
    return peer


def assert_did_error(response: httpx.Response, status: int, kind: str, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"kind", "description"}, body
    assert body["kind"] == kind, body
    for word in words:
        assert word in body["description"], body


async def assert_still_talks(peer: JanusPeer) -> None:
    """The stream takes a talk after the refusal and starts it."""
    response = await peer.talk("Still here.")
    assert response.status_code == 200, response.text
    await peer.wait_for_janus("stream/started", 10, response.json()["video_id"])


@needs_espeak
async def test_a_talk_stream_speaks_text_with_started_and_done_and_the_mouth_moves(
    http: httpx.AsyncClient,
) -> None:
    peer = await connected(http)
    try:
        created = peer.created
        assert created["fluent"] is True and created["interrupt_enabled"] is True
        assert created["offer"]["type"] == "offer" and "m=application" in created["offer"]["sdp"]
        await asyncio.sleep(0.5)
        idle = peer.mouth_opened_between(0, time.monotonic())
        response = await peer.talk(TEXT)
        assert response.status_code == 200, response.text
        talk = response.json()
        assert talk["status"] == "started" and talk["session_id"] == peer.vendor_session_id
        assert 1.5 < talk["duration"] < 8
        _, started = await peer.wait_for_janus("stream/started", 10, talk["video_id"])
        _, done = await peer.wait_for_janus("stream/done", talk["duration"] + 10, talk["video_id"])
        deleted = await peer.delete()
        assert deleted.status_code == 200, deleted.text
        gone = await peer.talk("Anyone?")
        assert_did_error(gone, 404, "NotFoundError")
    finally:
        await peer.close()
    assert idle < OPEN_MOUTH
    assert peer.mouth_opened_between(started, done) > OPEN_MOUTH


@needs_espeak
async def test_stream_interrupt_on_the_channel_cuts_the_talk_short(http: httpx.AsyncClient) -> None:
    peer = await connected(http)
    try:
        talk = (await peer.talk(TEXT + " " + TEXT)).json()
        _, started = await peer.wait_for_janus("stream/started", 10, talk["video_id"])
        await asyncio.sleep(0.5)
        peer.interrupt()
        _, done = await peer.wait_for_janus("stream/done", 3, talk["video_id"])
        assert done - started < talk["duration"] - 1
        await assert_still_talks(peer)
    finally:
        await peer.close()


async def test_clips_and_agents_streams_connect_and_take_audio_from_an_allowed_host() -> None:
    wav = encode(speech_like(1.6), "wav")
    with audio_host(wav) as origin:
        settings = make_settings(api_keys=(KEY,), audio_url_allowed_hosts=("127.0.0.1",))
        async with running_app(settings) as http:
            http.headers.update(BASIC)
            for base in ("/clips/streams", "/agents/demo/streams"):
                peer = await connected(http, base, create_body={"presenter_id": "demo"})
                try:
                    response = await peer.talk(audio_url=f"{origin}/speech.wav")
                    assert response.status_code == 200, response.text
                    talk = response.json()
                    assert talk["duration"] == pytest.approx(1.6, abs=0.05)
                    await peer.wait_for_janus("stream/started", 10, talk["video_id"])
                    await peer.wait_for_janus("stream/done", 10, talk["video_id"])
                finally:
                    await peer.close()


async def test_a_wrong_session_id_is_a_validation_error_and_the_stream_keeps_working(
    http: httpx.AsyncClient,
) -> None:
    peer = await connected(http)
    try:
        script = {"type": "text", "input": "Hi."}
        for body in ({"script": script, "session_id": "not-it"}, {"script": script}):
            response = await http.post(f"/talks/streams/{peer.stream_id}", json=body)
            assert_did_error(response, 400, "ValidationError", "session_id")
        if shutil.which("espeak-ng"):
            await assert_still_talks(peer)
    finally:
        await peer.close()


async def test_a_wrong_key_is_an_authorization_error(http: httpx.AsyncClient) -> None:
    for headers in ({"Authorization": "Basic not-the-key-at-all-0000"}, {"Authorization": ""}):
        response = await http.post("/talks/streams", json={}, headers=headers)
        assert_did_error(response, 401, "AuthorizationError", "API key")
    sdk_form = {"Authorization": f"Basic {KEY}~a1b2c3d4e5f6"}  # D-ID's SDK adds `~<random>`
    assert (await http.get("/agents/demo/runtime", headers=sdk_form)).status_code == 200


async def test_a_second_answer_is_a_conflict_and_the_stream_keeps_working(
    http: httpx.AsyncClient,
) -> None:
    peer = await connected(http)
    try:
        again = await peer.send_answer(peer.pc.localDescription.sdp)
        assert_did_error(again, 409, "ConflictError", "no server offer")
        if shutil.which("espeak-ng"):
            await assert_still_talks(peer)
    finally:
        await peer.close()


async def test_a_stream_is_found_only_on_the_path_it_was_created_on(http: httpx.AsyncClient) -> None:
    created = (await http.post("/talks/streams", json={})).json()
    ref = {"session_id": created["session_id"]}
    for other in ("/clips/streams", "/agents/demo/streams"):
        response = await http.post(f"{other}/{created['id']}/ice", json=ref)
        assert_did_error(response, 404, "NotFoundError")
    assert (await http.post(f"/talks/streams/{created['id']}/ice", json=ref)).status_code == 200


async def test_an_unknown_stream_or_agent_is_not_found(http: httpx.AsyncClient) -> None:
    response = await http.post("/talks/streams/nope/sdp", json={"answer": {"type": "answer", "sdp": "v=0"}, "session_id": "x"})
    assert_did_error(response, 404, "NotFoundError", "nope")
    assert_did_error(await http.post("/agents/nobody/streams", json={}), 404, "NotFoundError", "nobody")
    assert_did_error(await http.get("/agents/nobody/runtime"), 404, "NotFoundError", "nobody")
    runtime = (await http.get("/agents/demo/runtime")).json()
    assert runtime["id"] == "demo" and runtime["avatar"]["type"] == "talk"


async def test_a_malformed_body_is_a_validation_error(http: httpx.AsyncClient) -> None:
    response = await http.post("/talks/streams/x", json={"script": {"type": "video"}})
    assert_did_error(response, 422, "ValidationError", "script")


async def test_too_many_creations_are_too_many_requests() -> None:
    settings = make_settings(api_keys=(KEY,), create_burst=1, create_rate_per_minute=1)
    async with running_app(settings) as http:
        http.headers.update(BASIC)
        assert (await http.post("/talks/streams", json={})).status_code == 200
        response = await http.post("/talks/streams", json={})
        assert_did_error(response, 429, "TooManyRequestsError")
        assert int(response.headers["Retry-After"]) >= 1


async def test_audio_urls_are_refused_until_their_host_is_listed(http: httpx.AsyncClient) -> None:
    peer = await connected(http)
    try:
        response = await peer.talk(audio_url="http://127.0.0.1:9/speech.wav")
        assert_did_error(response, 403, "PermissionError", "AUDIO_URL_ALLOWED_HOSTS")
        for url in ("file:///etc/passwd", "gopher://127.0.0.1/", "http://user:pw@127.0.0.1/"):
            assert_did_error(await peer.talk(audio_url=url), 400, "ValidationError")
        if shutil.which("espeak-ng"):
            await assert_still_talks(peer)
    finally:
        await peer.close()


async def test_an_audio_url_refusal_of_each_kind_keeps_the_stream_working() -> None:
    """A private address behind a wildcard, a redirect to a host not listed, a body that
    is not audio, a host that does not answer in time, a body over MAX_UPLOAD_BYTES: each
    a clear refusal."""
    wav = encode(speech_like(1.0), "wav")
    with audio_host(wav) as origin, audio_host(b"<html>not audio</html>" * 10, "text/html") as html:
        cases = [
            (("*",), f"{origin}/speech.wav", 403, "private"),
            (("127.0.0.1",), f"{origin}/redirect?to=http://localhost:1/x.wav", 403, "localhost"),
            (("127.0.0.1",), f"{html}/page.html", 415, ""),
        ]
        cases.append((("127.0.0.1",), f"{origin}/slow.wav", 504, "AUDIO_URL_TIMEOUT_SECONDS"))
        for allowed, url, status, word in cases:
            settings = make_settings(
                api_keys=(KEY,), audio_url_allowed_hosts=allowed, audio_url_timeout_seconds=1.0
            )
            async with running_app(settings) as http:
                http.headers.update(BASIC)
                peer = await connected(http)
                try:
                    response = await peer.talk(audio_url=url)
                    assert response.status_code == status, (url, response.text)
                    assert word in response.json()["description"]
                    ok = await peer.talk(audio_url=f"{origin}/speech.wav") if allowed != ("*",) else None
                    assert ok is None or ok.status_code == 200, ok.text
                finally:
                    await peer.close()
        settings = make_settings(
            api_keys=(KEY,), audio_url_allowed_hosts=("127.0.0.1",), max_upload_bytes=len(wav) - 1
        )
        async with running_app(settings) as http:
            http.headers.update(BASIC)
            peer = await connected(http)
            try:
                response = await peer.talk(audio_url=f"{origin}/speech.wav")
                assert_did_error(response, 413, "ValidationError", "MAX_UPLOAD_BYTES")
            finally:
                await peer.close()
