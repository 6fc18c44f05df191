"""A native (aiortc) client allowed relayed candidates only connects through a real coturn
with its session's minted TURN credentials and receives the avatar.

Runs in the test network namespace (coturn on its peer address, tests/turn_server.py);
skipped elsewhere, except in CI, where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy

from tests.conftest import make_settings, running_app
from tests.live_server import NETNS_HOST_ADDRESS, in_test_network_namespace
from tests.turn_server import TURNSERVER, TurnServer
from tests.webrtc_client import ClientPeer

pytestmark = pytest.mark.webrtc

TURN_SECRET = "shared-secret-of-the-tests-only"
FRAMES = 5
POLL_SECONDS = 0.05


async def frames_received(client: ClientPeer, count: int) -> None:
    while len(client.received.video) < count:
        await asyncio.sleep(POLL_SECONDS)


def why_it_cannot_run() -> str | None:
    if not TURNSERVER.exists():
        return f"no {TURNSERVER}: install Debian's coturn (./scripts/test does)"
    if not in_test_network_namespace():
        return "not in the test network namespace: run the suite with ./scripts/test"
    return None


@pytest.fixture(scope="module")
def turn_server() -> Iterator[TurnServer]:
    reason = why_it_cannot_run()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the TURN tests, but {reason}")
        pytest.skip(reason)
    server = TurnServer(TURN_SECRET).start()
    yield server
    server.stop()


async def test_a_relay_only_native_client_receives_the_avatar_through_turn(
    turn_server: TurnServer,
) -> None:
    settings = make_settings(
        ice_host_addresses=(NETNS_HOST_ADDRESS,),
        turn_rest_urls=tuple(turn_server.urls),
        turn_secret=TURN_SECRET,
    )
    async with running_app(settings) as http:
        session = (await http.post("/webrtc/sessions/create")).json()
        ice_servers = [RTCIceServer(**entry) for entry in session["ice_servers"]]
        configuration = RTCConfiguration(
            iceServers=ice_servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY
        )
        # No host addresses to restrict to: with the relay policy it gathers none.
        client = ClientPeer(
            http, session["session_id"], host_addresses=(), configuration=configuration
        )
        try:
            await client.connect(timeout=20)
            offered = [line for line in client.pc.localDescription.sdp.splitlines()
                       if line.startswith("a=candidate:")]
            await asyncio.wait_for(frames_received(client, FRAMES), timeout=10)
        finally:
            await client.close()

    # Only relayed candidates were offered: the connection went through coturn.
    assert offered and all(" typ relay" in line for line in offered)
    username = session["ice_servers"][0]["username"]
    assert turn_server.allocations_by(username) >= 2  # the client's and the server's
    assert len(client.received.video) >= FRAMES
