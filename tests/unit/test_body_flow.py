"""`BodyFlowControl`: a request body buffers up to 1 MiB before reading pauses, for a
bounded number of connections, on uvicorn's real h11 protocol."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI
from uvicorn.config import Config
from uvicorn.server import ServerState

from server import slow_clients
from server.slow_clients import BODY_BUFFER_BYTES, BodyFlowControl, ClientDeadlines, protocol_with_deadlines


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.paused = False
        self.closing = False
        self.written = b""

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)


def head(size: int) -> bytes:
    return (
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: " + str(size).encode() + b"\r\n\r\n"
    )


async def never_reads(scope: dict, receive: object, send: object) -> None:
    await asyncio.sleep(3600)  # the app has not taken the body yet


def connection(loop: asyncio.AbstractEventLoop) -> tuple[object, FakeTransport]:
    config = Config(app=FastAPI(), log_config=None)
    config.load()
    config.loaded_app = never_reads
    cls = protocol_with_deadlines(ClientDeadlines(30.0, 30.0, 1))
    protocol = cls(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport


@pytest.fixture(autouse=True)
def no_extended() -> None:
    BodyFlowControl.extended.clear()
    yield
    BodyFlowControl.extended.clear()


async def test_a_body_buffers_to_a_mebibyte_before_reading_pauses() -> None:
    protocol, transport = connection(asyncio.get_running_loop())
    assert isinstance(protocol.flow, BodyFlowControl)
    protocol.data_received(head(2 * BODY_BUFFER_BYTES) + b"x" * 300_000)
    assert not transport.paused  # uvicorn alone pauses past 64 KiB
    protocol.data_received(b"x" * (BODY_BUFFER_BYTES - 300_000))
    assert not transport.paused
    protocol.data_received(b"x" * 1000)
    assert transport.paused  # past the mebibyte
    protocol.flow.resume_reading()  # the app took the buffer
    assert not transport.paused and protocol not in BodyFlowControl.extended
    protocol.connection_lost(None)


async def test_only_so_many_connections_buffer_past_uvicorns_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slow_clients, "BODY_BUFFER_CONNECTIONS", 2)
    loop = asyncio.get_running_loop()
    connections = [connection(loop) for _ in range(3)]
    for protocol, _ in connections:
        protocol.data_received(head(BODY_BUFFER_BYTES) + b"x" * 100_000)
    assert [t.paused for _, t in connections] == [False, False, True]
    connections[0][0].connection_lost(None)  # a buffering connection goes: its room is free
    fourth, transport = connection(loop)
    fourth.data_received(head(BODY_BUFFER_BYTES) + b"x" * 100_000)
    assert not transport.paused
    for protocol, _ in [*connections[1:], (fourth, transport)]:
        protocol.connection_lost(None)
    assert not BodyFlowControl.extended


async def test_a_pipelined_request_still_pauses_reading() -> None:
    protocol, transport = connection(asyncio.get_running_loop())
    protocol.data_received(head(10) + b"x" * 10 + head(10))  # the second waits for the first
    assert transport.paused
    protocol.connection_lost(None)
