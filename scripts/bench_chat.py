#!/usr/bin/env python3
"""Time to speech for text in and for an LLM turn, at a real aiortc receiver.

The server runs in its own process on loopback with the demo engine and espeak-ng; the
LLM is the test suite's stand-in (tests/fake_openai.py), streaming a three-sentence reply
word by word at `--word-ms` per word, as a real model streams tokens. Per trial, from the
instant the client sends its request:
- `/say` (one sentence): to the answer, and to the receiver's `speaking_started` event;
- `/chat`: to the first `chat_delta`, to `speaking_started` of the first sentence, to
  the LLM's last chunk, and to the answer.

    .venv/bin/python scripts/bench_chat.py [--trials 8] [--word-ms 60]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx

from benchkit import median, print_table, server_process, write_json
from tests.fake_openai import FakeOpenAiServer, Script
from tests.webrtc_client import ClientPeer

SENTENCE = "Hello, I am the avatar, and I am glad to meet you today."
REPLY = (
    "That is a good question, and I am happy you asked it. "
    "I spend my days talking with people like you. "
    "Ask me anything else you would like to know."
)
SETTLE_SECONDS = 0.5


async def event_after(peer: ClientPeer, kind: str, after: int, timeout: float = 20, **fields: object) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in peer.received.events[after:]:
            if event["type"] == kind and all(event.get(k) == v for k, v in fields.items()):
                return event
        await asyncio.sleep(0.002)
    raise TimeoutError(f"no {kind} {fields}")


async def run(url: str, fake: FakeOpenAiServer, trials: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {k: [] for k in (
        "say_answer", "say_speaking", "chat_first_delta", "chat_speaking", "chat_llm_done", "chat_answer",
    )}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
        peer = ClientPeer(http, sid)
        await peer.connect()
        await asyncio.sleep(1.0)
        try:
            for _ in range(trials):
                mark, t0 = len(peer.received.events), time.monotonic()
                said = await http.post(f"/webrtc/sessions/{sid}/say", json={"text": SENTENCE, "mode": "interrupt"})
                said.raise_for_status()
                figures["say_answer"].append(time.monotonic() - t0)
                uid = said.json()["utterance_id"]
                started = await event_after(peer, "speaking_started", mark, utterance_id=uid)
                figures["say_speaking"].append(started["arrival"] - t0)
                await asyncio.sleep(SETTLE_SECONDS)

                mark, t0 = len(peer.received.events), time.monotonic()
                turn = asyncio.create_task(
                    http.post(f"/webrtc/sessions/{sid}/chat", json={"message": "Who are you?", "mode": "interrupt"})
                )
                delta = await event_after(peer, "chat_delta", mark)
                started = await event_after(peer, "speaking_started", mark)
                answer = await turn
                answer.raise_for_status()
                figures["chat_answer"].append(time.monotonic() - t0)
                figures["chat_first_delta"].append(delta["arrival"] - t0)
                figures["chat_speaking"].append(started["arrival"] - t0)
                figures["chat_llm_done"].append(fake.service.stream_finished_at[-1] - t0)
                last = answer.json()["sentences"][-1]["utterance_id"]
                await event_after(peer, "speaking_ended", mark, utterance_id=last, timeout=30)
                await asyncio.sleep(SETTLE_SECONDS)
        finally:
            await peer.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--word-ms", type=float, default=60.0)
    args = parser.parse_args()
    with FakeOpenAiServer() as fake:
        fake.service.script = Script(reply=REPLY, word_delay_seconds=args.word_ms / 1000)
        env = {"LIPSYNC_ENGINE": "demo", "LLM_URL": fake.url, "LLM_MODEL": "stand-in", "TTS_ENGINE": "espeak"}
        with server_process(env) as server:
            figures = asyncio.run(run(server.url, fake, args.trials))
    rows = [
        (name, median(values) * 1000, max(values) * 1000, statistics.mean(values) * 1000)
        for name, values in figures.items()
    ]
    print_table(
        f"time from the request (ms), {args.trials} trials, LLM at {args.word_ms:g} ms per word",
        ["figure", "median", "max", "mean"], rows,
    )
    write_json(
        "chat",
        {
            "word_ms": args.word_ms,
            "trials": args.trials,
            "summary_ms": {name: round(median(v) * 1000, 1) for name, v in figures.items()},
            "figures_s": figures,
        },
    )


if __name__ == "__main__":
    main()
