"""The deployment's TURN as docker-compose.yml configures it: coturn run with the compose
file's own arguments, the server with the compose file's own environment, and a relay-only
player connecting through them and playing.

In the test network namespace the box's public name is the namespace's peer address
(coturn listens there) and the server's address is its host address.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import httpx
import pytest

from server.settings import Settings
from tests.browser.player_page import PlayerPage
from tests.browser.test_turn_relay import (
    API_TIMEOUT_SECONDS,
    RELAY_ONLY_SCRIPT,
    SELECTED_PAIR_SCRIPT,
    why_turn_tests_cannot_run,
)
from tests.conftest import EMPTY_MODELS_DIR, SHARED_AVATARS_DIR
from tests.deployment import env_file, options, service
from tests.live_server import NETNS_HOST_ADDRESS, LiveServer
from tests.turn_server import NETNS_PEER_ADDRESS, TurnServer

pytestmark = [pytest.mark.browser, pytest.mark.webrtc]

DEPLOYMENT_ENV = {
    **env_file(),
    "PUBLIC_HOST": NETNS_PEER_ADDRESS,
    "SERVER_IP": NETNS_HOST_ADDRESS,
    "TURN_SECRET": "shared-secret-of-the-tests-only",
    "API_KEYS": "test-deployment-key-0123456789",
}


@pytest.fixture(scope="module")
def deployed_turn() -> Iterator[TurnServer]:
    reason = why_turn_tests_cannot_run()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the TURN tests, but {reason}")
        pytest.skip(reason)
    arguments = service("coturn", DEPLOYMENT_ENV)["command"]
    (port,) = options(arguments)["listening-port"]
    server = TurnServer(
        DEPLOYMENT_ENV["TURN_SECRET"], NETNS_PEER_ADDRESS, int(port), arguments
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def deployed_server(deployed_turn: TurnServer) -> Iterator[LiveServer]:
    environment = {**service("avatar-server", DEPLOYMENT_ENV)["environment"], "LIPSYNC_ENGINE": "demo"}
    settings = Settings.from_env(
        environment,
        avatars_dir=SHARED_AVATARS_DIR,
        models_dir=EMPTY_MODELS_DIR,
        public_url="",  # no TLS proxy here: player_url is the server's own address
    )
    server = LiveServer(settings).start()
    yield server
    server.stop()


def test_a_relay_only_player_plays_through_the_deployments_coturn(
    deployed_server: LiveServer, deployed_turn: TurnServer, new_tab: Callable[..., PlayerPage]
) -> None:
    key = {"Authorization": f"Bearer {DEPLOYMENT_ENV['API_KEYS']}"}  # the compose file's keys
    with httpx.Client(base_url=deployed_server.url, timeout=API_TIMEOUT_SECONDS, headers=key) as api:
        session = api.post("/webrtc/sessions/create").raise_for_status().json()
        try:
            player = new_tab(RELAY_ONLY_SCRIPT)
            player.open(session["player_url"])
            player.wait_for_state("ready", timeout=30)
            player.wait_for_frames(10)

            pair = player.page.evaluate(SELECTED_PAIR_SCRIPT)
            assert pair["local"]["candidateType"] == "relay"
            # coturn relays to the server's address: the one peer it is allowed.
            assert pair["remote"]["address"] == NETNS_HOST_ADDRESS
            environment = service("avatar-server", DEPLOYMENT_ENV)["environment"]
            rest_urls = environment["WEBRTC_TURN_REST_URLS"].split(",")
            assert any(e["urls"] == rest_urls and "username" in e for e in session["ice_servers"])
        finally:
            api.delete(f"/webrtc/sessions/{session['session_id']}")
