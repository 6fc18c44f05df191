"""A real aiortc client connected to a new session, in a process of its own.

    python -m tests.fuzz.listening_client URL

prints the session id once connected and stays connected until its standard input
closes. Tests whose request generation must be reproducible (schemathesis draws from
Python's global `random`, which aiortc also uses all the time) keep the peer out of their
own process this way.
"""

from __future__ import annotations

import asyncio
import sys

import httpx

from tests.webrtc_client import ClientPeer

REQUEST_TIMEOUT_SECONDS = 15.0
# The first session of a fresh server prepares the built-in avatar: seconds, more on a
# busy machine.
CREATE_TIMEOUT_SECONDS = 120.0
CONNECT_TIMEOUT_SECONDS = 60.0


async def listen(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_SECONDS) as http:
        created = await http.post("/webrtc/sessions/create", timeout=CREATE_TIMEOUT_SECONDS)
        created.raise_for_status()
        session_id = created.json()["session_id"]
        peer = ClientPeer(http, session_id)
        try:
            await peer.connect(CONNECT_TIMEOUT_SECONDS)
            print(session_id, flush=True)
            await asyncio.to_thread(sys.stdin.read)
        finally:
            await peer.close()


if __name__ == "__main__":
    asyncio.run(listen(sys.argv[1]))
