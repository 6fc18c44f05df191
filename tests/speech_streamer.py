"""A client streaming speech into a session's WebSocket, as a TTS would, and what it hears back."""

from __future__ import annotations

import asyncio
import io
import json
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np
import websockets


def pcm_s16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def ogg_opus(samples: np.ndarray, page_seconds: float) -> bytes:
    """48 kHz mono Ogg/Opus with a page every `page_seconds`, as a streaming TTS writes it."""
    buffer = io.BytesIO()
    options = {"page_duration": str(int(page_seconds * 1_000_000))}
    with av.open(buffer, mode="w", format="ogg", options=options) as container:
        stream = container.add_stream("libopus", rate=48_000, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None, :].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate = 48_000
        frame.time_base = Fraction(1, 48_000)
        frame.pts = 0
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=48_000)
        for converted in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(converted):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


@dataclass
class StreamResult:
    messages: list[dict[str, Any]] = field(default_factory=list)
    first_chunk_sent: float | None = None
    """time.time() when the first audio chunk was sent."""
    close_code: int | None = None
    close_reason: str = ""

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]


class SpeechStreamer:
    """One WebSocket to `/webrtc/sessions/{id}/speech`; messages from the server are kept."""

    def __init__(
        self, base_url: str, session_id: str, query: str = "", headers: dict[str, str] | None = None
    ) -> None:
        self.headers = headers or {}
        ws_base = base_url.replace("http://", "ws://", 1)
        self.url = f"{ws_base}/webrtc/sessions/{session_id}/speech" + (f"?{query}" if query else "")
        self.result = StreamResult()
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._arrived = asyncio.Condition()

    async def __aenter__(self) -> SpeechStreamer:
        self._ws = await websockets.connect(self.url, max_size=None, additional_headers=self.headers)
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._ws.close()
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)

    async def send_json(self, message: dict[str, Any]) -> None:
        await self._ws.send(json.dumps(message))

    async def send_bytes(self, data: bytes) -> None:
        await self._ws.send(data)

    async def stream(self, data: bytes, chunk_seconds: float, bytes_per_second: float, pace: float = 1.0) -> None:
        """Send `data` in chunks of `chunk_seconds` of audio, `pace` times real time."""
        size = max(1, int(chunk_seconds * bytes_per_second))
        size -= size % 2
        start = time.monotonic()
        sent = 0
        for offset in range(0, len(data), size):
            chunk = data[offset : offset + size]
            due = start + sent / bytes_per_second / pace
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if self.result.first_chunk_sent is None:
                self.result.first_chunk_sent = time.time()
            await self._ws.send(chunk)
            sent += len(chunk)

    async def wait_for(self, kind: str, timeout: float) -> dict[str, Any]:
        async def found() -> dict[str, Any]:
            async with self._arrived:
                while True:
                    matches = self.result.of_type(kind)
                    if matches:
                        return matches[0]
                    if self.result.close_code is not None:
                        raise AssertionError(f"closed ({self.result.close_code}) before {kind!r}: {self.result.messages}")
                    await self._arrived.wait()

        return await asyncio.wait_for(found(), timeout)

    async def wait_closed(self, timeout: float) -> int | None:
        if self._reader is not None:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.result.close_code

    async def _read(self) -> None:
        try:
            async for text in self._ws:
                message = json.loads(text)
                message["_received"] = time.time()
                async with self._arrived:
                    self.result.messages.append(message)
                    self._arrived.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.result.close_code = self._ws.close_code
            self.result.close_reason = self._ws.close_reason or ""
            async with self._arrived:
                self._arrived.notify_all()
