"""Per-client rate limits on session creation and uploads: 429 with Retry-After."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import make_settings, running_app


async def load_the_avatar(http: httpx.AsyncClient) -> None:
    """Load (and on a first run prepare) the demo avatar, which can take seconds, so that
    the buckets do not refill during a test's first creation."""
    avatars = http.app.state.server.avatars
    await avatars.acquire("demo")
    avatars.release("demo")


async def test_creates_past_the_burst_are_429_with_retry_after() -> None:
    async with running_app(make_settings(create_burst=3, create_rate_per_minute=6)) as http:
        await load_the_avatar(http)
        for _ in range(3):
            assert (await http.post("/webrtc/sessions/create")).status_code == 200
        response = await http.post("/webrtc/sessions/create")
        assert response.status_code == 429
        body = response.json()
        assert 9 <= body["retry_after_seconds"] <= 10  # one token per 10 s
        assert response.headers["Retry-After"] == "10"
        assert "Too many session creations" in body["detail"]
        assert len(http.app.state.server.sessions) == 3


async def test_the_bucket_refills_at_the_rate() -> None:
    async with running_app(make_settings(create_burst=1, create_rate_per_minute=600)) as http:
        await load_the_avatar(http)
        assert (await http.post("/webrtc/sessions/create")).status_code == 200
        assert (await http.post("/webrtc/sessions/create")).status_code == 429
        await asyncio.sleep(0.15)  # 10 tokens a second
        assert (await http.post("/webrtc/sessions/create")).status_code == 200


async def test_each_client_address_has_its_own_bucket() -> None:
    async with running_app(make_settings(create_burst=1, create_rate_per_minute=1)) as http:
        await load_the_avatar(http)
        assert (await http.post("/webrtc/sessions/create")).status_code == 200
        assert (await http.post("/webrtc/sessions/create")).status_code == 429
        other = httpx.ASGITransport(app=http.app, client=("192.0.2.7", 40000))
        async with httpx.AsyncClient(transport=other, base_url="http://testserver") as client:
            assert (await client.post("/webrtc/sessions/create")).status_code == 200


async def test_uploads_past_the_burst_are_429_before_the_body_is_read() -> None:
    async with running_app(make_settings(upload_burst=2, upload_rate_per_minute=1)) as http:
        sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
        files = {"audio_file": ("a.wav", b"RIFF....WAVE", "audio/wav")}
        for _ in range(2):  # refused for another reason, but counted
            assert (await http.post(f"/webrtc/sessions/{sid}/stream", files=files)).status_code == 409
        response = await http.post(f"/webrtc/sessions/{sid}/stream", files=files)
        assert response.status_code == 429
        assert "Too many uploads" in response.json()["detail"]
        assert int(response.headers["Retry-After"]) == 60


async def test_zero_turns_a_limit_off() -> None:
    async with running_app(make_settings(create_burst=0, max_sessions=40)) as http:
        responses = [await http.post("/webrtc/sessions/create") for _ in range(35)]
        assert {r.status_code for r in responses} == {200}
