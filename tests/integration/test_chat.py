"""`POST /webrtc/sessions/{id}/chat`: an LLM's streamed reply spoken sentence by sentence.

The LLM is a stand-in served on loopback (tests/fake_openai.py) that streams a scripted
reply word by word; the TTS (espeak-ng), the session and the receiving peer are real.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from tests.conftest import make_settings, running_app
from tests.fake_openai import PAUSE, FakeOpenAiServer, Script
from tests.integration.test_busy_policy import connected_session, wait_for
from tests.live_server import LiveServer
from tests.sse_client import EventStream, read_events
from tests.webrtc_client import ClientPeer

pytestmark = [
    pytest.mark.webrtc,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
]

SYSTEM_PROMPT = "You are a test avatar."


@asynccontextmanager
async def chat_session(
    fake: FakeOpenAiServer, **overrides: object
) -> AsyncIterator[tuple[httpx.AsyncClient, str, ClientPeer]]:
    settings = make_settings(
        llm_url=fake.url, llm_model="tiny", llm_key="sk-test", llm_system_prompt=SYSTEM_PROMPT,
        **overrides,
    )
    async with running_app(settings) as http:
        sid, peer = await connected_session(http)
        try:
            yield http, sid, peer
        finally:
            await peer.close()


async def chat(http: httpx.AsyncClient, sid: str, message: str, **fields: object) -> httpx.Response:
    return await http.post(
        f"/webrtc/sessions/{sid}/chat", json={"message": message, **fields}, timeout=30
    )


def events_of(peer: ClientPeer, kind: str) -> list[dict]:
    return [e for e in peer.received.events if e["type"] == kind]


async def test_the_first_sentence_is_spoken_before_the_reply_has_finished() -> None:
    with FakeOpenAiServer() as fake:
        fake.service.script = Script(
            reply=f"Hello there, nice to see you. {PAUSE}I am fine, thank you.", pause_seconds=2.5
        )
        async with chat_session(fake) as (http, sid, peer):
            response = await chat(http, sid, "How are you?")
            answered = time.monotonic()
            assert response.status_code == 200, response.text
            body = response.json()
            second = body["sentences"][1]["utterance_id"]
            await wait_for(peer, "speaking_ended", second, timeout=10)
    assert body["reply"].split() == "Hello there, nice to see you. I am fine, thank you.".split()
    assert [s["text"] for s in body["sentences"]] == ["Hello there, nice to see you.", "I am fine, thank you."]
    assert body["sentences"][0]["queue_position"] == 0
    first_started = events_of(peer, "speaking_started")[0]
    assert first_started["utterance_id"] == body["sentences"][0]["utterance_id"]
    # Heard while the LLM was still pausing before its second sentence.
    (finished,) = fake.service.stream_finished_at
    assert first_started["arrival"] < finished - 1.0
    assert answered >= finished
    # The text as events: the deltas add up to the reply, then the reply itself.
    deltas = "".join(e["text"] for e in events_of(peer, "chat_delta"))
    assert deltas == body["reply"]
    (reply,) = events_of(peer, "chat_reply")
    assert reply["text"] == body["reply"] and reply["interrupted"] is False
    assert reply["utterance_ids"] == [s["utterance_id"] for s in body["sentences"]]
    # The LLM got the configured model, the system prompt and a streamed request.
    request = fake.service.chat_requests[0]
    assert request["model"] == "tiny" and request["stream"] is True
    assert request["messages"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "How are you?"},
    ]


async def test_the_conversation_is_kept_and_bounded() -> None:
    with FakeOpenAiServer() as fake:
        async with chat_session(fake, chat_history_messages=4) as (http, sid, peer):
            for turn in range(1, 5):
                fake.service.script = Script(reply=f"Answer {turn}.")
                response = await chat(http, sid, f"Question {turn}?", mode="interrupt")
                assert response.status_code == 200, response.text
            assert response.json()["history_messages"] == 4
    sent = [[m["content"] for m in r["messages"]] for r in fake.service.chat_requests]
    assert sent[1] == [SYSTEM_PROMPT, "Question 1?", "Answer 1. ", "Question 2?"]
    assert [m["role"] for m in fake.service.chat_requests[1]["messages"]] == [
        "system", "user", "assistant", "user",
    ]
    # Four messages kept: the oldest turn goes first, the system prompt always stays.
    assert sent[3] == [
        SYSTEM_PROMPT, "Question 2?", "Answer 2. ", "Question 3?", "Answer 3. ", "Question 4?",
    ]


async def test_a_system_prompt_in_the_body_replaces_the_sessions_from_then_on() -> None:
    with FakeOpenAiServer() as fake:
        fake.service.script = Script(reply="Ahoy.")
        async with chat_session(fake) as (http, sid, peer):
            await chat(http, sid, "Hi", system_prompt="You are a pirate.", mode="interrupt")
            await chat(http, sid, "Hi again", mode="interrupt")
    for request in fake.service.chat_requests:
        assert request["messages"][0] == {"role": "system", "content": "You are a pirate."}


async def test_without_an_llm_configured_chat_is_503_with_a_sentence(http: httpx.AsyncClient) -> None:
    sid, peer = await connected_session(http)
    try:
        response = await chat(http, sid, "Hello?")
    finally:
        await peer.close()
    assert response.status_code == 503
    assert "LLM_URL" in response.json()["detail"]


@pytest.mark.parametrize(
    ("failure", "words"),
    [
        ("status", "answered 500"),
        ("garbage", "not a chat completions stream"),
        ("bad-chunk", "not JSON"),
        ("error-event", "context length exceeded"),
    ],
)
async def test_a_failing_llm_is_502_with_a_sentence_and_the_session_works_on(
    failure: str, words: str
) -> None:
    with FakeOpenAiServer() as fake:
        async with chat_session(fake) as (http, sid, peer):
            fake.service.script = Script(reply="Half a reply", failure=failure)
            failed = await chat(http, sid, "Hello?")
            await peer.wait_for_event("chat_error", timeout=2)
            fake.service.script = Script(reply="All good now.")
            recovered = await chat(http, sid, "Hello again?", mode="interrupt")
            said = await http.post(
                f"/webrtc/sessions/{sid}/say", json={"text": "Still here.", "mode": "queue"}
            )
    assert failed.status_code == 502
    assert words in failed.json()["detail"]
    assert recovered.status_code == 200 and recovered.json()["reply"] == "All good now. "
    assert said.status_code == 200
    # The failed turn is not part of the conversation.
    assert [m["content"] for m in fake.service.chat_requests[-1]["messages"]] == [
        SYSTEM_PROMPT, "Hello again?",
    ]


async def test_a_service_that_answers_one_completion_instead_of_a_stream_is_spoken_too() -> None:
    with FakeOpenAiServer() as fake:
        fake.service.script = Script(reply="Not streamed. Still spoken.", whole=True)
        async with chat_session(fake) as (http, sid, peer):
            response = await chat(http, sid, "Hello?")
    assert response.status_code == 200, response.text
    assert [s["text"] for s in response.json()["sentences"]] == ["Not streamed.", "Still spoken."]


async def test_an_unreachable_llm_is_502() -> None:
    with FakeOpenAiServer() as fake:
        url = fake.url
    # The service has stopped: nothing listens there any more.
    settings = make_settings(llm_url=url, llm_model="tiny", llm_timeout_seconds=3)
    async with running_app(settings) as http:
        sid, peer = await connected_session(http)
        try:
            response = await chat(http, sid, "Hello?")
        finally:
            await peer.close()
    assert response.status_code == 502
    assert "could not be reached" in response.json()["detail"]


async def test_interrupting_the_avatar_stops_the_chat_turn() -> None:
    with FakeOpenAiServer() as fake:
        fake.service.script = Script(
            reply=f"This first sentence is spoken for a while. {PAUSE}This one never is.",
            pause_seconds=4,
        )
        async with chat_session(fake) as (http, sid, peer):
            turn = asyncio.create_task(chat(http, sid, "Talk to me."))
            await peer.wait_for_event("speaking_started", timeout=10)
            cut = await http.post(f"/webrtc/sessions/{sid}/interrupt")
            response = await asyncio.wait_for(turn, timeout=2)
    assert cut.json()["interrupted"] is not None
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["interrupted"] is True
    assert [s["text"] for s in body["sentences"]] == ["This first sentence is spoken for a while."]
    assert "never" not in body["reply"]
    assert not fake.service.stream_finished_at  # the stream was closed before its end


async def test_a_new_chat_in_mode_interrupt_stops_the_running_turn_and_follows_it() -> None:
    with FakeOpenAiServer() as fake:
        fake.service.script = Script(
            reply=f"This first sentence is spoken for a while. {PAUSE}This one never is.",
            pause_seconds=4,
        )
        async with chat_session(fake) as (http, sid, peer):
            first = asyncio.create_task(chat(http, sid, "Talk to me."))
            await peer.wait_for_event("speaking_started", timeout=10)
            fake.service.script = Script(reply="Yes?")
            second = await asyncio.wait_for(chat(http, sid, "Wait!", mode="interrupt"), timeout=3)
            first_answer = await first
    assert first_answer.json()["interrupted"] is True
    assert second.status_code == 200, second.text
    cut = second.json()["sentences"][0]
    assert cut["queue_position"] == 0
    replies = events_of(peer, "chat_reply")
    assert [r["interrupted"] for r in replies] == [True, False]
    # The stopped turn is in the conversation as far as it came.
    assert [m["content"] for m in fake.service.chat_requests[-1]["messages"]] == [
        SYSTEM_PROMPT, "Talk to me.", first_answer.json()["reply"], "Wait!",
    ]


async def test_a_second_chat_while_one_runs_is_409() -> None:
    with FakeOpenAiServer() as fake:
        fake.service.script = Script(reply=f"Wait. {PAUSE}Done.", pause_seconds=2)
        async with chat_session(fake) as (http, sid, peer):
            first = asyncio.create_task(chat(http, sid, "One"))
            await peer.wait_for_event("chat_delta", timeout=5)
            second = await chat(http, sid, "Two", mode="queue")
            assert (await first).status_code == 200
    assert second.status_code == 409
    assert "chat turn is still running" in second.json()["detail"]
    assert "mode=interrupt" in second.json()["detail"]


async def test_a_too_long_message_is_422() -> None:
    with FakeOpenAiServer() as fake:
        async with chat_session(fake, chat_max_message_chars=10) as (http, sid, peer):
            response = await chat(http, sid, "This message is too long.")
    assert response.status_code == 422 and "CHAT_MAX_MESSAGE_CHARS" in response.json()["detail"]
    assert not fake.service.chat_requests


async def test_a_backend_listening_to_the_event_stream_gets_the_chat_text() -> None:
    with FakeOpenAiServer() as fake:
        fake.service.script = Script(reply="One two three. Four five.")
        settings = make_settings(llm_url=fake.url, llm_model="tiny")
        live = LiveServer(settings, host="127.0.0.1").start()
        try:
            async with httpx.AsyncClient(base_url=live.url, timeout=15) as http:
                sid, peer = await connected_session(http)
                stream = EventStream()
                reader = asyncio.ensure_future(read_events(http, sid, stream))
                try:
                    await stream.wait_for("state", timeout=5)
                    response = await chat(http, sid, "Count.")
                    await stream.wait_for("chat_reply", timeout=5)
                    await peer.wait_for_event("chat_reply", timeout=5)
                finally:
                    await peer.close()
                    reader.cancel()
                    await asyncio.gather(reader, return_exceptions=True)
        finally:
            live.stop()
    assert response.status_code == 200, response.text
    deltas = stream.of_type("chat_delta")
    assert "".join(e["text"] for e in deltas) == response.json()["reply"]
    assert [e["_event"] for e in deltas[:1]] == ["chat_delta"]
    (reply,) = stream.of_type("chat_reply")
    assert reply["text"] == response.json()["reply"]
    # The same events, with the same numbers, as on the peer's data channel.
    on_channel = {e["seq"]: e["type"] for e in peer.received.events if e["type"].startswith("chat_")}
    assert {e["seq"]: e["type"] for e in deltas + [reply]} == on_channel
