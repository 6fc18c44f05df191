"""The player and the demo page in Chromium under their Content-Security-Policy, and the
player on a server with API keys, where only its session's token lets it in."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.browser.conftest import why_browser_tests_cannot_run
from tests.browser.player_page import PlayerPage
from tests.conftest import make_settings
from tests.live_server import NETNS_HOST_ADDRESS, LiveServer

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage

pytestmark = [pytest.mark.browser, pytest.mark.webrtc]

KEY = "browser-test-key-0123456789"
LOAD_TIMEOUT_SECONDS = 10.0
# A fresh server loads the demo avatar on its first session: slow on a busy machine.
HTTP_TIMEOUT_SECONDS = 30.0


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[LiveServer]:
    reason = why_browser_tests_cannot_run()
    if reason is not None:
        pytest.skip(reason)
    settings = make_settings(ice_host_addresses=(NETNS_HOST_ADDRESS,), api_keys=(KEY,))
    server = LiveServer(settings).start()
    yield server
    server.stop()


def watch_policy_violations(tab: PlayerPage) -> list[str]:
    """What Chromium reports refusing under the page's Content-Security-Policy."""
    refused: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            refused.append(message.text)

    tab.page.on("console", on_console)
    return refused


def test_the_player_runs_under_its_policy_on_a_server_with_keys(
    keyed_server: LiveServer, new_tab: Callable[..., PlayerPage]
) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=keyed_server.url, headers=headers, timeout=HTTP_TIMEOUT_SECONDS) as api:
        session = api.post("/webrtc/sessions/create").raise_for_status().json()
        player = new_tab()
        refused = watch_policy_violations(player)
        player.open(session["player_url"])

        player.wait_for_state("ready")
        player.wait_for_frames(5)
        info = api.get(f"/webrtc/sessions/{session['session_id']}").json()
        assert info["state"] == "idle"
        assert refused == []
        api.delete(f"/webrtc/sessions/{session['session_id']}")


def test_a_player_url_without_its_token_is_refused_on_a_server_with_keys(
    keyed_server: LiveServer, new_tab: Callable[..., PlayerPage]
) -> None:
    with httpx.Client(base_url=keyed_server.url, timeout=HTTP_TIMEOUT_SECONDS) as api:
        session = api.post(
            "/webrtc/sessions/create", headers={"X-Api-Key": KEY}
        ).raise_for_status().json()
        player = new_tab()
        response = player.page.goto(session["player_url"].split("?")[0])
        assert response is not None and response.status == 401
        assert player.peer_connections() == 0
        api.delete(f"/webrtc/sessions/{session['session_id']}", headers={"X-Api-Key": KEY})


def test_the_demo_page_runs_under_its_policy(
    live_server: LiveServer, new_tab: Callable[..., PlayerPage]
) -> None:
    tab = new_tab()
    refused = watch_policy_violations(tab)
    tab.open(f"{live_server.url}/")
    # Polled from here: wait_for_function would evaluate a string, which the policy forbids.
    deadline = time.monotonic() + LOAD_TIMEOUT_SECONDS
    while not (tab.page.text_content("#log") or "").startswith("Engine: demo"):
        assert time.monotonic() < deadline, tab.page.text_content("#log")
        tab.wait(0.05)
    assert tab.page.eval_on_selector_all("#avatar option", "options => options.map(o => o.value)") == ["demo"]
    assert refused == []
