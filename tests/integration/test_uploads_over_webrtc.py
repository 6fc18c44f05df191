"""Uploads to a connected session: every bad one is refused clearly and loses nothing."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.audio_files import encode, speech_like
from tests.conftest import make_settings, running_app
from tests.webrtc_client import ClientPeer

pytestmark = pytest.mark.webrtc

MAX_BYTES = 200_000
MAX_SECONDS = 3.0


async def upload(http: httpx.AsyncClient, session_id: str, **kwargs: object) -> httpx.Response:
    return await http.post(f"/webrtc/sessions/{session_id}/stream", **kwargs)


async def test_bad_uploads_are_refused_and_the_session_still_speaks() -> None:
    settings = make_settings(max_upload_bytes=MAX_BYTES, max_audio_seconds=MAX_SECONDS)
    async with running_app(settings) as http:
        session = (await http.post("/webrtc/sessions/create")).json()
        sid = session["session_id"]
        peer = ClientPeer(http, sid)
        try:
            await peer.connect()
            wav = encode(speech_like(1.0), "wav")
            cases = [
                (400, "empty", {"files": {"audio_file": ("a.wav", b"", "audio/wav")}}),
                (415, "could not be read as audio", {"files": {"audio_file": ("a.txt", b"hello " * 200, "text/plain")}}),
                (400, "truncated", {"files": {"audio_file": ("a.wav", wav[: len(wav) // 2], "audio/wav")}}),
                (413, "the limit is 3 s", {"files": {"audio_file": ("a.mp3", encode(speech_like(5.0), "mp3"), "audio/mpeg")}}),
                (413, f"limit of {MAX_BYTES} bytes", {"files": {"audio_file": ("a.wav", encode(speech_like(2.9), "wav"), "audio/wav")}}),
                (422, "no field 'audio_file'", {"files": {"audio": ("a.wav", wav, "audio/wav")}}),
                (422, "must be a file", {"data": {"audio_file": "hello"}, "files": {"note": ("n.txt", b"x", "text/plain")}}),
                (415, "multipart/form-data", {"json": {"audio_file": "hello"}}),
            ]
            for status, words, kwargs in cases:
                response = await upload(http, sid, **kwargs)
                assert response.status_code == status, (words, response.text)
                assert words in response.json()["detail"], response.text
            info = (await http.get(f"/webrtc/sessions/{sid}")).json()
            assert info["state"] == "idle"

            good = await upload(http, sid, files={"audio_file": ("hello.m4a", encode(speech_like(1.0), "m4a"), "audio/mp4")})
            assert good.status_code == 200, good.text
            assert good.json()["source"]["codec"] == "aac"
            await peer.wait_for_event("speaking_started", timeout=5)
            await peer.wait_for_event("speaking_ended", timeout=5)
            assert max(v.mouth_dark for v in peer.received.video) > 0.08
        finally:
            await peer.close()


@pytest.mark.parametrize("kind", ["mp3", "ogg", "flac", "webm"])
async def test_each_common_format_is_spoken(http: httpx.AsyncClient, kind: str) -> None:
    sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
    peer = ClientPeer(http, sid)
    try:
        await peer.connect()
        response = await upload(http, sid, files={"audio_file": (f"speech.{kind}", encode(speech_like(0.8), kind), "application/octet-stream")})
        assert response.status_code == 200, response.text
        assert response.json()["duration_seconds"] == pytest.approx(0.8, abs=0.03)
        await peer.wait_for_event("speaking_ended", timeout=5)
    finally:
        await peer.close()


async def test_an_upload_sent_while_the_connection_is_set_up_waits_for_it(http: httpx.AsyncClient) -> None:
    """Sent as soon as the offer is answered, before ICE and DTLS have run, the upload
    waits for the connection to be up (Session.connection_settled) instead of a 409."""
    sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
    peer = ClientPeer(http, sid)
    sent: list[asyncio.Task[httpx.Response]] = []
    hook = peer._hook_receivers

    def upload_now() -> None:  # the answer has come; the client has not applied it yet
        files = {"audio_file": ("a.wav", encode(speech_like(0.8), "wav"), "audio/wav")}
        sent.append(asyncio.ensure_future(upload(http, sid, files=files)))
        hook()

    peer._hook_receivers = upload_now  # type: ignore[method-assign]
    try:
        await peer.connect()
        response = await sent[0]
        assert response.status_code == 200, response.text
        await peer.wait_for_event("speaking_ended", timeout=5)
    finally:
        await peer.close()
