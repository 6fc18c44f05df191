"""HeyGen Streaming API v1 (`/v1/streaming.*`) driven by a real aiortc client: the flow,
the data channel's events, and the refusals in HeyGen's shape and codes."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import make_settings, running_app
from tests.fake_openai import FakeOpenAiServer, Script
from tests.heygen_client import HeygenPeer, heygen_new

pytestmark = pytest.mark.webrtc
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

KEY = "heygen-test-key-0123456789"
SENTENCE = "Hello, I am the avatar, and I am speaking through the HeyGen interface."
LONG_TEXT = " ".join([SENTENCE] * 4)
OPEN_MOUTH = 0.05


async def created(http: httpx.AsyncClient, **fields: object) -> dict:
    response = await heygen_new(http, **fields)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == 100 and body["message"] == "success"
    return body["data"]


@pytest.fixture
async def peer(http: httpx.AsyncClient) -> AsyncIterator[HeygenPeer]:
    client = HeygenPeer(http, await created(http))
    await client.connect()
    try:
        yield client
    finally:
        await client.close()


async def talking(peer: HeygenPeer, kind: str, task_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in peer.received.events:
            if event.get("type") == kind and event.get("task_id") == task_id:
                return event
        await asyncio.sleep(0.02)
    raise TimeoutError(f"no {kind} for task {task_id}: {peer.received.events}")


def refused(response: httpx.Response, status: int, code: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message"} and body["code"] == code, body
    return body["message"]


async def test_new_answers_a_server_offer_with_heygen_fields(http: httpx.AsyncClient) -> None:
    data = await created(http, avatar_name="demo", voice={"voice_id": "en-us", "rate": 1.0})
    assert data["sdp"]["type"] == "offer"
    assert "m=application" in data["sdp"]["sdp"] and data["sdp"]["sdp"].count("a=sendonly") == 2
    assert isinstance(data["ice_servers2"], list) and isinstance(data["ice_servers"], list)
    listed = (await http.get("/v1/streaming.list")).json()["data"]["sessions"]
    assert {"session_id": data["session_id"], "status": "new"}.items() <= listed[0].items()


@needs_espeak
async def test_a_task_is_spoken_with_moving_mouth_and_talking_events(
    http: httpx.AsyncClient, peer: HeygenPeer
) -> None:
    await asyncio.sleep(0.5)  # idle video first
    idle = [v.mouth_dark for v in peer.received.video]
    assert len(idle) > 3 and max(idle) < OPEN_MOUTH
    response = await peer.call("task", text=SENTENCE, task_type="repeat")
    assert response.status_code == 200, response.text
    task = response.json()["data"]
    assert 2000 < task["duration_ms"] < 10000
    start = await talking(peer, "avatar_start_talking", task["task_id"], timeout=5)
    stop = await talking(peer, "avatar_stop_talking", task["task_id"], timeout=task["duration_ms"] / 1000 + 5)
    speaking = [v.mouth_dark for v in peer.received.video if start["arrival"] <= v.arrival <= stop["arrival"]]
    assert max(speaking) > OPEN_MOUTH, "the mouth did not move"
    assert abs(stop["duration_ms"] - task["duration_ms"]) < 50
    assert peer.binary_messages >= 2  # as HeyGen's v1 SDK reads them


@needs_espeak
async def test_interrupt_cuts_the_task_and_ends_it_with_what_was_heard(
    http: httpx.AsyncClient, peer: HeygenPeer
) -> None:
    task = (await peer.call("task", text=LONG_TEXT)).json()["data"]
    await talking(peer, "avatar_start_talking", task["task_id"], timeout=5)
    await asyncio.sleep(1.0)
    response = await peer.call("interrupt")
    assert response.status_code == 200 and response.json()["code"] == 100
    stop = await talking(peer, "avatar_stop_talking", task["task_id"], timeout=2)
    assert 500 < stop["duration_ms"] < task["duration_ms"] / 2
    assert (await peer.call("interrupt")).status_code == 200  # silent: nothing to do


async def test_candidates_before_start_are_kept_and_keep_alive_answers(peer: HeygenPeer) -> None:
    assert peer.pc.connectionState == "connected"
    deadline = time.monotonic() + 5
    while len(peer.received.video) < 3:
        assert time.monotonic() < deadline, "no video arrived"
        await asyncio.sleep(0.05)
    response = await peer.call("keep_alive")
    assert response.status_code == 200 and response.json() == {"code": 100, "message": "success", "data": None}


async def test_a_task_after_stop_is_refused_as_closed(http: httpx.AsyncClient, peer: HeygenPeer) -> None:
    assert (await peer.call("stop")).json()["code"] == 100
    message = refused(await peer.call("task", text=SENTENCE), 400, 10005)
    assert "streaming.new" in message
    refused(await peer.call("stop"), 400, 10005)


async def test_unknown_session_is_404_10006(http: httpx.AsyncClient) -> None:
    for call, fields in (("start", {"sdp": {"type": "answer", "sdp": "v=0"}}), ("task", {"text": "hi"}),
                         ("ice", {"candidate": None}), ("interrupt", {}), ("stop", {})):
        response = await http.post(f"/v1/streaming.{call}", json={"session_id": "nothing-here", **fields})
        refused(response, 404, 10006)


async def test_a_task_before_start_is_400_10001_and_the_session_still_starts(http: httpx.AsyncClient) -> None:
    client = HeygenPeer(http, await created(http))
    try:
        message = refused(await client.call("task", text=SENTENCE), 400, 10001)
        assert "streaming.start" in message
        await client.connect()
        refused(await client.call("start", sdp={"type": "answer", "sdp": "v=0"}), 400, 10003)
    finally:
        await client.close()


async def test_an_unusable_answer_is_400_and_the_right_one_then_connects(http: httpx.AsyncClient) -> None:
    client = HeygenPeer(http, await created(http))
    try:
        answer = await client.answer()
        refused(await client.call("start", sdp={"type": "answer", "sdp": "nonsense"}), 400, 400175)
        refused(await client.call("start", sdp={**answer, "type": "offer"}), 400, 400175)
        started = await client.call("start", sdp=answer)
        assert started.status_code == 200, started.text
        await asyncio.wait_for(client._connected.wait(), 15)
    finally:
        await client.close()


async def test_a_malformed_body_is_422_400128(http: httpx.AsyncClient) -> None:
    refused(await http.post("/v1/streaming.task", json={"text": "no session id"}), 422, 400128)
    refused(await http.post("/v1/streaming.new", content=b"{not json", headers={"content-type": "application/json"}), 422, 400128)
    refused(await heygen_new(http, quality="ultra"), 422, 400128)


async def test_an_unknown_avatar_is_404_10012_unless_a_fallback_is_set(http: httpx.AsyncClient) -> None:
    refused(await heygen_new(http, avatar_name="Kristin_public_3_20240108"), 404, 10012)
    async with running_app(make_settings(heygen_avatar_fallback="demo")) as other:
        data = await created(other, avatar_id="Kristin_public_3_20240108")
        assert data["session_id"]


async def test_version_v2_is_refused(http: httpx.AsyncClient) -> None:
    message = refused(await heygen_new(http, version="v2"), 400, 400175)
    assert "v1" in message


async def test_a_wrong_key_is_401_400112_and_the_key_as_x_api_key_works() -> None:
    async with running_app(make_settings(api_keys=(KEY,))) as http:
        refused(await heygen_new(http), 401, 400112)
        http.headers["X-Api-Key"] = "not-the-key-0123456789"
        refused(await heygen_new(http), 401, 400112)
        http.headers["X-Api-Key"] = KEY
        assert (await heygen_new(http)).json()["code"] == 100
        del http.headers["X-Api-Key"]
        http.headers["Authorization"] = f"Bearer {KEY}"  # @heygen/streaming-avatar 1.x's form
        assert (await heygen_new(http)).json()["code"] == 100


async def test_the_session_limit_is_503_10007_with_retry_after() -> None:
    async with running_app(make_settings(max_sessions=1)) as http:
        await created(http)
        full = await heygen_new(http)
        refused(full, 503, 10007)
        assert int(full.headers["Retry-After"]) >= 1


async def test_a_created_token_stands_in_for_the_key_but_cannot_mint_more() -> None:
    async with running_app(make_settings(api_keys=(KEY,))) as http:
        minted = await http.post("/v1/streaming.create_token", headers={"X-Api-Key": KEY}, json={})
        assert minted.status_code == 200, minted.text
        body = minted.json()
        assert body["error"] is None and len(body["data"]["token"]) >= 32
        http.headers["Authorization"] = f"Bearer {body['data']['token']}"
        assert (await heygen_new(http)).json()["code"] == 100
        refused(await http.post("/v1/streaming.create_token", json={}), 401, 400112)
        http.headers["Authorization"] = "Bearer not-a-token-0123456789abcdef"
        refused(await heygen_new(http), 401, 400112)


async def test_a_token_expires() -> None:
    async with running_app(make_settings(api_keys=(KEY,), heygen_token_ttl_seconds=0.2)) as http:
        token = (await http.post("/v1/streaming.create_token", headers={"X-Api-Key": KEY})).json()["data"]["token"]
        await asyncio.sleep(0.3)
        expired = await http.post("/v1/streaming.new", json={}, headers={"Authorization": f"Bearer {token}"})
        refused(expired, 401, 400112)


async def test_a_token_minted_by_one_node_is_good_on_another_with_the_same_keys() -> None:
    """Nothing is stored: behind a proxy, the node that minted a token need not be the one
    that gets `streaming.new`. A node with other keys refuses it."""
    async with running_app(make_settings(api_keys=(KEY,))) as minting:
        minted = await minting.post("/v1/streaming.create_token", headers={"X-Api-Key": KEY})
    token = minted.json()["data"]["token"]
    async with running_app(make_settings(api_keys=(KEY,), node_id="b")) as other:
        accepted = await other.post("/v1/streaming.new", json={}, headers={"Authorization": f"Bearer {token}"})
        assert accepted.json()["code"] == 100, accepted.text
    async with running_app(make_settings(api_keys=("another-key-0123456789",))) as stranger:
        refused(await stranger.post("/v1/streaming.new", json={}, headers={"Authorization": f"Bearer {token}"}), 401, 400112)


@needs_espeak
async def test_a_chat_task_speaks_the_llms_reply_with_the_knowledge_base_as_prompt() -> None:
    with FakeOpenAiServer() as fake:
        fake.service.script = Script(reply="Hello there, nice to see you. I am fine.")
        settings = make_settings(llm_url=fake.url, llm_model="tiny", llm_key="sk-test")
        async with running_app(settings) as http:
            client = HeygenPeer(http, await created(http, knowledge_base="You are Ada, a test avatar."))
            try:
                await client.connect()
                response = await client.call("task", text="How are you?", task_type="chat")
                assert response.status_code == 200, response.text
                task = response.json()["data"]
                await talking(client, "avatar_start_talking", task["task_id"], timeout=5)
            finally:
                await client.close()
    assert task["duration_ms"] > 1500
    assert fake.service.chat_requests[0]["messages"] == [
        {"role": "system", "content": "You are Ada, a test avatar."},
        {"role": "user", "content": "How are you?"},
    ]
