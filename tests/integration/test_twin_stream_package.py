"""TWIN's stream package (`/v1/stream-package/…`, every call a JSON POST) with a real
aiortc client: the same streams and Janus events as D-ID's, D-ID's error shape."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import make_settings, running_app
from tests.fake_openai import FakeOpenAiServer, Script
from tests.integration.test_did_streams import BASIC, KEY, OPEN_MOUTH, assert_did_error
from tests.janus_client import TWIN, JanusPeer

pytestmark = [
    pytest.mark.webrtc,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_settings(api_keys=(KEY,))) as client:
        client.headers.update(BASIC)
        yield client


async def connected(http: httpx.AsyncClient, **body: object) -> JanusPeer:
    peer = JanusPeer(http, TWIN, create_body={"twinId": "demo", "responseResolution": 512, **body})
    await peer.connect()
    await peer.wait_for_janus("stream/ready", timeout=5)
    return peer


async def test_a_twin_stream_speaks_text_pings_and_is_deleted(http: httpx.AsyncClient) -> None:
    peer = await connected(http)
    try:
        response = await peer.talk("Hello from your twin. How are you today?")
        assert response.status_code == 200, response.text
        started = response.json()
        assert started["status"] == "started" and started["video_id"]
        _, t0 = await peer.wait_for_janus("stream/started", 10, started["video_id"])
        _, t1 = await peer.wait_for_janus("stream/done", started["duration"] + 10, started["video_id"])
        ping = await http.post(f"{TWIN}/pingStream", json=peer.ref())
        assert ping.status_code == 200 and ping.json()["status"] == "ok", ping.text
        deleted = await peer.delete()
        assert deleted.json()["status"] == "deleted", deleted.text
        assert_did_error(await http.post(f"{TWIN}/pingStream", json=peer.ref()), 404, "NotFoundError")
    finally:
        await peer.close()
    assert peer.mouth_opened_between(t0, t1) > OPEN_MOUTH
    assert peer.mouth_opened_between(0, t0 - 0.3) < OPEN_MOUTH


async def test_start_llm_stream_speaks_the_models_reply() -> None:
    with FakeOpenAiServer() as llm:
        llm.service.script = Script(reply="Nice to meet you. I am a twin.")
        settings = make_settings(api_keys=(KEY,), llm_url=llm.url, llm_model="fake")
        async with running_app(settings) as http:
            http.headers.update(BASIC)
            peer = await connected(http)
            try:
                response = await http.post(
                    f"{TWIN}/startLlmStream", json=peer.ref(input="Who are you?", twinId="demo")
                )
                assert response.status_code == 200, response.text
                reply = response.json()
                assert reply["reply"].split() == "Nice to meet you. I am a twin.".split()
                assert len(reply["video_ids"]) == 2
                await peer.wait_for_janus("stream/started", 10, reply["video_ids"][0])
                await peer.wait_for_janus("stream/done", 15, reply["video_ids"][-1])
            finally:
                await peer.close()


async def test_twin_refusals_are_in_d_ids_shape_and_the_stream_keeps_working(
    http: httpx.AsyncClient,
) -> None:
    unknown = await http.post(f"{TWIN}/setupConnection", json={"twinId": "nobody"})
    assert_did_error(unknown, 404, "NotFoundError", "nobody")
    peer = await connected(http)
    try:
        wrong = {"streamId": peer.stream_id, "sessionId": "not-it", "input": "Hi."}
        assert_did_error(await http.post(f"{TWIN}/startStream", json=wrong), 400, "ValidationError", "session_id")
        assert_did_error(
            await http.post(f"{TWIN}/startStream", json={"streamId": peer.stream_id}), 422, "ValidationError"
        )
        assert_did_error(
            await http.post(f"{TWIN}/startStream", json=peer.ref(input="Hi."), headers={"Authorization": ""}),
            401, "AuthorizationError",
        )
        no_llm = await http.post(f"{TWIN}/startLlmStream", json=peer.ref(input="Hi."))
        assert no_llm.status_code == 503 and no_llm.json()["kind"] == "ServiceUnavailableError"
        response = await peer.talk("Still here.")
        assert response.status_code == 200, response.text
        await peer.wait_for_janus("stream/started", 10, response.json()["video_id"])
    finally:
        await peer.close()


async def test_response_resolution_scales_the_video_the_client_receives(
    http: httpx.AsyncClient,
) -> None:
    too_big = await http.post(f"{TWIN}/setupConnection", json={"twinId": "demo", "responseResolution": "4320p"})
    assert_did_error(too_big, 422, "ValidationError", "1080")
    peer = JanusPeer(http, TWIN, create_body={"twinId": "demo", "responseResolution": "256p"}, keep_images=True)
    await peer.connect()
    try:
        await peer.wait_for_janus("stream/ready", timeout=5)
        while len(peer.received.video) < 3:
            await asyncio.sleep(0.05)
    finally:
        await peer.close()
    assert {v.image.shape for v in peer.received.video} == {(256, 256, 3)}  # type: ignore[union-attr]
