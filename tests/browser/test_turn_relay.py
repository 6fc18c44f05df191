"""Through a real coturn: a player allowed only relayed candidates connects with its
session's minted TURN REST credentials and plays; coturn refuses forged or expired ones.

coturn (tests/turn_server.py) runs in the test network namespace with the secret the
server mints with. Skipped where it cannot run, except in CI, where that is a failure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from server.media.ice_servers import turn_rest_credential
from tests.browser.conftest import why_browser_tests_cannot_run
from tests.browser.player_page import PlayerPage
from tests.conftest import make_settings
from tests.live_server import NETNS_HOST_ADDRESS, LiveServer
from tests.turn_server import TURNSERVER, TurnServer

pytestmark = [pytest.mark.browser, pytest.mark.webrtc]

TURN_SECRET = "shared-secret-of-the-tests-only"

# Makes every peer connection the page opens use relayed candidates only, as a phone
# behind a carrier NAT that allows nothing else effectively does. Injected after the
# recorder (tests/browser/player_page.py), so the connections are still recorded.
RELAY_ONLY_SCRIPT = """
(() => {
  const Recorded = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Recorded {
    constructor(config, ...rest) {
      super({ ...(config || {}), iceTransportPolicy: "relay" }, ...rest);
    }
  };
})();
"""

# The newest connection's selected candidate pair, with both of its candidates.
SELECTED_PAIR_SCRIPT = """
async () => {
  const pc = window.__playerTest.peers.at(-1);
  const reports = await pc.getStats();
  let pair = null;
  reports.forEach((report) => {
    if (report.type === "transport" && report.selectedCandidatePairId) {
      pair = reports.get(report.selectedCandidatePairId);
    }
  });
  if (!pair) return null;
  return { state: pair.state, local: reports.get(pair.localCandidateId),
           remote: reports.get(pair.remoteCandidateId) };
}
"""

# Gathers relayed candidates with `iceServers`: what was gathered, and the TURN errors.
GATHER_RELAYED_SCRIPT = """
async ({ iceServers, timeoutMs }) => {
  const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: "relay" });
  const candidates = [];
  const errors = [];
  pc.addEventListener("icecandidate", (event) => {
    if (event.candidate && event.candidate.candidate) candidates.push(event.candidate.candidate);
  });
  pc.addEventListener("icecandidateerror", (event) => errors.push(event.errorCode));
  const complete = new Promise((resolve) => pc.addEventListener("icegatheringstatechange",
    () => { if (pc.iceGatheringState === "complete") resolve(); }));
  pc.createDataChannel("probe");
  await pc.setLocalDescription(await pc.createOffer());
  await Promise.race([complete, new Promise((resolve) => setTimeout(resolve, timeoutMs))]);
  pc.close();
  return { candidates, errors };
}
"""
GATHER_TIMEOUT_MS = 10_000
# The first session of a test run prepares the demo avatar: on a loaded CI machine that
# alone can take longer than a request usually may.
API_TIMEOUT_SECONDS = 120.0
UNAUTHORIZED = 401


def why_turn_tests_cannot_run() -> str | None:
    reason = why_browser_tests_cannot_run()
    if reason is not None:
        return reason
    if not TURNSERVER.exists():
        return f"no {TURNSERVER}: install Debian's coturn (./scripts/test does)"
    return None


@pytest.fixture(scope="module")
def turn_server() -> Iterator[TurnServer]:
    reason = why_turn_tests_cannot_run()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the TURN tests, but {reason}")
        pytest.skip(reason)
    server = TurnServer(TURN_SECRET).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def relay_server(turn_server: TurnServer) -> Iterator[LiveServer]:
    """The server minting each session's TURN credentials with coturn's secret."""
    settings = make_settings(
        ice_host_addresses=(NETNS_HOST_ADDRESS,),
        turn_rest_urls=tuple(turn_server.urls),
        turn_secret=TURN_SECRET,
    )
    server = LiveServer(settings).start()
    yield server
    server.stop()


@pytest.fixture
def relay_api(relay_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=relay_server.url, timeout=API_TIMEOUT_SECONDS) as client:
        yield client


def minted_entry(session: dict[str, Any], turn_server: TurnServer) -> dict[str, Any]:
    (entry,) = [e for e in session["ice_servers"] if e["urls"] == turn_server.urls]
    return entry


def server_local_candidates(relay_server: LiveServer, session_id: str) -> list[Any]:
    """The ICE candidates the server's peer connection of the session gathered."""

    async def gathered() -> list[Any]:
        pc = relay_server.core.sessions.get(session_id)._pc
        assert pc is not None
        transport = pc.getTransceivers()[0].sender.transport.transport
        return transport.iceGatherer.getLocalCandidates()

    return relay_server.call(gathered())


def test_a_relay_only_player_connects_through_turn_with_its_sessions_credentials_and_plays(
    relay_api: httpx.Client,
    relay_server: LiveServer,
    turn_server: TurnServer,
    new_tab: Callable[..., PlayerPage],
) -> None:
    session = relay_api.post("/webrtc/sessions/create").raise_for_status().json()
    entry = minted_entry(session, turn_server)
    assert entry["username"].endswith(":" + session["session_id"])

    player = new_tab(RELAY_ONLY_SCRIPT)
    player.open(session["player_url"])
    player.wait_for_state("ready", timeout=30)
    player.wait_for_frames(10)

    pair = player.page.evaluate(SELECTED_PAIR_SCRIPT)
    assert pair is not None and pair["state"] == "succeeded"
    assert pair["local"]["candidateType"] == "relay"
    assert pair["local"]["address"] == turn_server.address
    candidates = [c["candidate"] for c in player.posted("/ice") if c["candidate"]]
    assert candidates and all(" typ relay " in c for c in candidates)
    # The server too was given the session's credentials, and coturn took them.
    assert turn_server.allocations_by(entry["username"]) >= 2  # the page's and the server's
    relayed = [c for c in server_local_candidates(relay_server, session["session_id"])
               if c.type == "relay"]
    assert [c.ip for c in relayed] == [turn_server.address]
    first = player.inbound()
    player.wait(1.0)
    later = player.inbound()
    assert later["video"]["framesDecoded"] > first["video"]["framesDecoded"]
    assert later["audio"]["totalSamplesReceived"] > first["audio"]["totalSamplesReceived"]
    relay_api.delete(f"/webrtc/sessions/{session['session_id']}")


def test_the_player_reconnects_through_turn_with_the_credentials_its_session_was_given(
    relay_api: httpx.Client,
    relay_server: LiveServer,
    turn_server: TurnServer,
    new_tab: Callable[..., PlayerPage],
) -> None:
    session = relay_api.post("/webrtc/sessions/create").raise_for_status().json()
    player = new_tab(RELAY_ONLY_SCRIPT)
    player.open(session["player_url"])
    player.wait_for_state("ready", timeout=30)
    server_session = relay_server.core.sessions.get(session["session_id"])
    relay_server.call(server_session._pc.close())  # as if the server's transport died

    player.wait_for_state("ready", count=2, timeout=30)
    player.wait_for_frames(5)
    assert player.page.evaluate(SELECTED_PAIR_SCRIPT)["local"]["candidateType"] == "relay"
    info = relay_api.get(f"/webrtc/sessions/{session['session_id']}").json()
    assert minted_entry(info, turn_server) == minted_entry(session, turn_server)
    relay_api.delete(f"/webrtc/sessions/{session['session_id']}")


def gather_relayed(tab: PlayerPage, urls: list[str], username: str, password: str) -> dict:
    servers = [{"urls": urls, "username": username, "credential": password}]
    return tab.page.evaluate(
        GATHER_RELAYED_SCRIPT, {"iceServers": servers, "timeoutMs": GATHER_TIMEOUT_MS}
    )


def test_coturn_grants_a_relay_for_credentials_made_with_the_shared_secret(
    turn_server: TurnServer, new_tab: Callable[..., PlayerPage]
) -> None:
    credential = turn_rest_credential(TURN_SECRET, "probe", int(time.time()) + 600)
    gathered = gather_relayed(new_tab(), turn_server.urls, credential.username, credential.password)
    assert any(" typ relay " in c for c in gathered["candidates"]), gathered


def test_coturn_refuses_credentials_made_with_another_secret(
    turn_server: TurnServer, new_tab: Callable[..., PlayerPage]
) -> None:
    forged = turn_rest_credential("another-secret", "probe", int(time.time()) + 600)
    gathered = gather_relayed(new_tab(), turn_server.urls, forged.username, forged.password)
    assert gathered["candidates"] == []
    assert UNAUTHORIZED in gathered["errors"], gathered


def test_coturn_refuses_expired_credentials(
    turn_server: TurnServer, new_tab: Callable[..., PlayerPage]
) -> None:
    expired = turn_rest_credential(TURN_SECRET, "probe", int(time.time()) - 5)
    gathered = gather_relayed(new_tab(), turn_server.urls, expired.username, expired.password)
    assert gathered["candidates"] == []
    assert UNAUTHORIZED in gathered["errors"], gathered
