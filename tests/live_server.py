"""The app served by uvicorn on a real socket, for a real browser to reach.

The server runs in a thread with its own event loop, so that a synchronous test (or
benchmark) can drive a browser and still reach the server's own objects, on their
loop, with `call`.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvicorn

from server.app import create_app
from server.core import AvatarServer
from server.settings import Settings

T = TypeVar("T")

# scripts/netns.sh gives the test network namespace these addresses (a veth pair).
NETNS_HOST_ADDRESS = "10.203.0.1"

START_TIMEOUT_SECONDS = 30.0
CALL_TIMEOUT_SECONDS = 15.0


def in_test_network_namespace() -> bool:
    """Whether this process runs in the namespace scripts/test makes (its veth is here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((NETNS_HOST_ADDRESS, 0))
        except OSError as error:
            if error.errno == errno.EADDRNOTAVAIL:
                return False
            raise
    return True


class LiveServer:
    """`create_app(settings)` served at `url` until `stop()`."""

    def __init__(
        self, settings: Settings, host: str = NETNS_HOST_ADDRESS, log_level: str = "warning"
    ) -> None:
        self.settings = settings
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        port = self._socket.getsockname()[1]
        self.url = f"http://{host}:{port}"
        self.app = create_app(settings)
        self._uvicorn = uvicorn.Server(
            uvicorn.Config(self.app, log_level=log_level, lifespan="on")
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="live-server", daemon=True)

    @property
    def core(self) -> AvatarServer:
        """The running server's parts (sessions, worker); use them through `call`."""
        return self.app.state.server

    def start(self) -> LiveServer:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._until_started(), self._loop)
        started.result(START_TIMEOUT_SECONDS)
        return self

    def stop(self) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(START_TIMEOUT_SECONDS)
        self._socket.close()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT_SECONDS) -> T:
        """Run `coroutine` on the server's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._uvicorn.serve(sockets=[self._socket]))
        finally:
            self._loop.close()

    async def _until_started(self) -> None:
        while not self._uvicorn.started:
            if self._uvicorn.should_exit:
                raise RuntimeError("the server stopped while starting")
            await asyncio.sleep(0.01)
