"""Uploads are decoded in worker processes: what breaks a decoder costs one request, not the server."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from server.isolation.worker import CRASH_ON_PURPOSE
from tests.audio_files import encode, speech_like
from tests.conftest import make_settings, running_app
from tests.hostile_audio import (
    WAVE_FORMAT_IEEE_FLOAT,
    encoded,
    planar_aac_7_1,
    tone,
    wav,
)
from tests.webrtc_client import ClientPeer

pytestmark = pytest.mark.webrtc

RATE = 48_000
MIB = 1024 * 1024
BOMB_MEMORY_LIMIT = 280 * MIB
"""A worker's limit in the bomb tests: its libraries take ~210 MiB of it."""


@pytest.fixture(scope="module")
def memory_bomb() -> bytes:
    """100 s of 192 kHz silence in a few hundred KB: within every cap, 77 MB once decoded."""
    return encoded(100.0, 192_000, "mono", silent=True)


async def upload(http: httpx.AsyncClient, session_id: str, name: str, data: bytes) -> httpx.Response:
    files = {"audio_file": (name, data, "application/octet-stream")}
    return await http.post(f"/webrtc/sessions/{session_id}/stream", files=files)


@asynccontextmanager
async def connected(http: httpx.AsyncClient) -> AsyncIterator[tuple[str, ClientPeer]]:
    sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
    peer = ClientPeer(http, sid)
    try:
        await peer.connect()
        yield sid, peer
    finally:
        await peer.close()


async def speaks(http: httpx.AsyncClient, sid: str, peer: ClientPeer) -> None:
    """The session accepts an ordinary utterance and plays it to its end."""
    response = await upload(http, sid, "hello.mp3", encode(speech_like(0.6), "mp3"))
    assert response.status_code == 200, response.text
    await peer.wait_for_event("speaking_ended", timeout=10)


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) * 1024


def peak_rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024


@pytest.mark.parametrize(
    ("name", "channels", "data"),
    [
        ("7.1.wav", 8, wav(tone(1.0, RATE, 8), RATE)),
        ("16-channel.wav", 16, wav(tone(1.0, RATE, 16), RATE)),
        ("7.1.flac", 8, encoded(1.0, RATE, "7.1")),
        ("7.1.aac", 8, planar_aac_7_1(1.0)),
    ],
)
async def test_many_channel_audio_is_spoken_and_the_server_lives(
    http: httpx.AsyncClient, name: str, channels: int, data: bytes
) -> None:
    async with connected(http) as (sid, peer):
        response = await upload(http, sid, name, data)
        assert response.status_code == 200, response.text
        assert response.json()["source"]["channels"] == channels
        assert response.json()["duration_seconds"] == pytest.approx(1.0, abs=0.05)
        await peer.wait_for_event("speaking_ended", timeout=10)
        await speaks(http, sid, peer)


async def test_a_decoder_crash_is_a_400_and_a_fresh_worker_decodes_the_next(
    http: httpx.AsyncClient,
) -> None:
    pool = http.app.state.server.audio_decoders  # type: ignore[attr-defined]
    before = set(pool.worker_pids())
    async with connected(http) as (sid, peer):
        response = await upload(http, sid, "crash.wav", CRASH_ON_PURPOSE)
        assert response.status_code == 400, response.text
        assert "crash" in response.json()["detail"]
        await speaks(http, sid, peer)
    after = set(pool.worker_pids())
    assert len(after) == len(before)
    assert after != before


async def test_nan_samples_are_400_and_the_session_still_speaks(http: httpx.AsyncClient) -> None:
    samples = tone(1.0, RATE)
    samples[1000:2000] = float("nan")
    async with connected(http) as (sid, peer):
        response = await upload(http, sid, "nan.wav", wav(samples, RATE, WAVE_FORMAT_IEEE_FLOAT, 32))
        assert response.status_code == 400, response.text
        assert "NaN" in response.json()["detail"]
        await speaks(http, sid, peer)


async def test_a_rate_bomb_is_413_before_it_is_decoded(http: httpx.AsyncClient) -> None:
    bomb = encoded(10.0, 384_000, "stereo", silent=True)
    async with connected(http) as (sid, peer):
        response = await upload(http, sid, "bomb.flac", bomb)
        assert response.status_code == 413, response.text
        assert "384000 Hz" in response.json()["detail"]
        await speaks(http, sid, peer)


async def held_upload(
    http: httpx.AsyncClient, sid: str, data: bytes, reading: asyncio.Event, release: asyncio.Event
) -> httpx.Response:
    """An upload whose body stops after its first KB until `release`; `reading` is set
    once the server has asked for more of it (so it holds the session)."""
    url = f"/webrtc/sessions/{sid}/stream"
    request = http.build_request("POST", url, files={"audio_file": ("bomb.flac", data, "audio/flac")})
    body = request.read()

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:1024]
        reading.set()
        await release.wait()
        yield body[1024:]

    return await http.post(url, content=chunks(), headers={"content-type": request.headers["content-type"]})


async def test_eight_bombs_at_once_to_one_session_decode_one_and_the_server_stays_small(
    memory_bomb: bytes,
) -> None:
    settings = make_settings(decode_max_memory_bytes=BOMB_MEMORY_LIMIT, max_audio_seconds=120.0)
    async with running_app(settings) as http:
        pool = http.app.state.server.audio_decoders  # type: ignore[attr-defined]
        async with connected(http) as (sid, peer):
            before = rss_bytes(os.getpid())
            reading, release = asyncio.Event(), asyncio.Event()
            first = asyncio.create_task(held_upload(http, sid, memory_bomb, reading, release))
            await asyncio.wait_for(reading.wait(), timeout=10)
            others = await asyncio.gather(
                *(upload(http, sid, f"bomb{i}.flac", memory_bomb) for i in range(7))
            )
            assert [r.status_code for r in others] == [409] * 7, [r.text for r in others]
            assert "still being received or decoded" in others[0].json()["detail"]
            assert int(others[0].headers["Retry-After"]) >= 1
            release.set()
            refused = await first
            assert refused.status_code == 413, refused.text
            assert "memory" in refused.json()["detail"]
            assert rss_bytes(os.getpid()) - before < 64 * MIB
            for pid in pool.worker_pids():
                assert peak_rss_bytes(pid) < BOMB_MEMORY_LIMIT
            await speaks(http, sid, peer)


async def test_uploads_past_the_server_wide_decode_bound_get_503() -> None:
    settings = make_settings(decode_max_in_flight=1)
    async with running_app(settings) as http:
        pool = http.app.state.server.audio_decoders  # type: ignore[attr-defined]
        async with connected(http) as (sid, peer):
            busy_decoding = asyncio.ensure_future(pool.run(time.sleep, 3.0))
            await asyncio.sleep(0.2)
            busy = await upload(http, sid, "hello.mp3", encode(speech_like(0.6), "mp3"))
            assert busy.status_code == 503, busy.text
            assert "as many files as it may at once (1)" in busy.json()["detail"]
            assert int(busy.headers["Retry-After"]) >= 1
            await busy_decoding
            await speaks(http, sid, peer)
