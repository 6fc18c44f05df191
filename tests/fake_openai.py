"""A stand-in for a remote OpenAI-compatible service, served on loopback for the tests.

`POST /v1/chat/completions` streams a scripted reply word by word as chat.completion
chunks (pausing where the script says), or fails the way the script says;
`POST /v1/audio/speech` answers a tone as 24 kHz PCM16 (or WAV, MP3, Ogg/Opus) of a
length that grows with the text, at once or, with `speech_pace`, streamed as a streaming
TTS does (pieces of `SPEECH_PIECE_SECONDS` at that many times real time). Every request
body is recorded.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
import time
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

PAUSE = "<pause>"
"""In a scripted reply: wait `pause_seconds` here before sending the rest."""
SPEECH_RATE = 24_000
SPEECH_SECONDS_PER_CHAR = 0.03
SPEECH_PIECE_SECONDS = 0.1
UNKNOWN_VOICE = "nobody"
"""A voice the speech service answers 400 for."""


@dataclass
class Script:
    reply: str = "Hello there. I am fine."
    pause_seconds: float = 0.0
    word_delay_seconds: float = 0.0
    whole: bool = False
    """Answer one JSON chat.completion, ignoring `stream` (as some services do)."""
    failure: str | None = None
    """None, 'status' (HTTP 500), 'garbage' (not a stream), 'bad-chunk' (broken JSON
    mid-stream), 'error-event' (an error object in the stream)."""


@dataclass
class FakeOpenAi:
    """The service; `script` says how the next chat requests are answered."""

    script: Script = field(default_factory=Script)
    chat_requests: list[dict[str, Any]] = field(default_factory=list)
    speech_requests: list[dict[str, Any]] = field(default_factory=list)
    stream_finished_at: list[float] = field(default_factory=list)
    """time.monotonic() when each reply's last chunk was sent."""
    speech_pace: float = 0.0
    """0: speech answered at once; else streamed at this many times real time."""
    speech_finished_at: list[float] = field(default_factory=list)
    """time.time() when each speech answer's last piece was sent."""

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            body = await request.json()
            self.chat_requests.append(body)
            script = self.script
            if script.failure == "status":
                return JSONResponse({"error": {"message": "the model is overloaded"}}, 500)
            if script.failure == "garbage":
                return PlainTextResponse("<html>Bad gateway</html>", media_type="text/event-stream")
            if script.whole:
                message = {"role": "assistant", "content": script.reply.replace(PAUSE, "")}
                return JSONResponse(
                    {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}
                )
            return StreamingResponse(self._chunks(script), media_type="text/event-stream")

        @app.post("/v1/audio/speech")
        async def speech(request: Request) -> Response:
            body = await request.json()
            self.speech_requests.append(body)
            if body.get("voice") == UNKNOWN_VOICE:
                return JSONResponse({"error": {"message": f"unknown voice {UNKNOWN_VOICE}"}}, 400)
            seconds = max(0.2, len(body["input"]) * SPEECH_SECONDS_PER_CHAR)
            t = np.arange(int(seconds * SPEECH_RATE)) / SPEECH_RATE
            pcm = (0.4 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2").tobytes()
            response_format = body.get("response_format")
            if response_format == "wav":
                buffer = io.BytesIO()
                with wave.open(buffer, "wb") as out:
                    out.setnchannels(1)
                    out.setsampwidth(2)
                    out.setframerate(SPEECH_RATE)
                    out.writeframes(pcm)
                pcm = buffer.getvalue()
            elif response_format in ("mp3", "opus"):
                from tests.audio_files import encode
                from tests.speech_streamer import ogg_opus

                tone = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
                if response_format == "mp3":
                    pcm = encode(tone, "mp3", rate=SPEECH_RATE)
                else:
                    pcm = ogg_opus(np.repeat(tone, 2), page_seconds=0.04)  # 48 kHz
            if not self.speech_pace:
                self.speech_finished_at.append(time.time())
                return Response(pcm, media_type="application/octet-stream")
            return StreamingResponse(self._speech_pieces(pcm, seconds), media_type="application/octet-stream")

        return app

    async def _speech_pieces(self, data: bytes, seconds: float) -> AsyncIterator[bytes]:
        pieces = max(1, round(seconds / SPEECH_PIECE_SECONDS))
        size = -(-len(data) // pieces)
        for offset in range(0, len(data), size):
            yield data[offset : offset + size]
            await asyncio.sleep(SPEECH_PIECE_SECONDS / self.speech_pace)
        self.speech_finished_at.append(time.time())

    async def _chunks(self, script: Script) -> AsyncIterator[str]:
        def chunk(content: str) -> str:
            data = {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
            }
            return f"data: {json.dumps(data)}\n\n"

        yield f"data: {json.dumps({'object': 'chat.completion.chunk', 'choices': [{'index': 0, 'delta': {'role': 'assistant'}}]})}\n\n"
        for part_index, part in enumerate(script.reply.split(PAUSE)):
            if part_index:
                await asyncio.sleep(script.pause_seconds)
            for word in part.split(" "):
                if word:
                    yield chunk(word + " ")
                    await asyncio.sleep(script.word_delay_seconds)
            if script.failure == "bad-chunk":
                yield "data: {not json\n\n"
                return
            if script.failure == "error-event":
                yield 'data: {"error": {"message": "context length exceeded"}}\n\n'
                return
        self.stream_finished_at.append(time.monotonic())
        yield "data: [DONE]\n\n"


class FakeOpenAiServer:
    """`FakeOpenAi` served by uvicorn on 127.0.0.1 in a thread; `url` is its `/v1` base."""

    def __init__(self) -> None:
        self.service = FakeOpenAi()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}/v1"
        self._server = uvicorn.Server(
            uvicorn.Config(self.service.app(), log_level="warning", lifespan="off")
        )
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._socket])),
            name="fake-openai", daemon=True,
        )

    def __enter__(self) -> FakeOpenAiServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake OpenAI service did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()
