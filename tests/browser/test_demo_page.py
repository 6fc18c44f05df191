"""The demo page at `/` in Chromium: a newcomer starts a session, makes the avatar say
text, interrupts it, and sees each step in the page's events log, under the page's
Content-Security-Policy."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.player_page import (
    AUTOPLAY_ALLOWED,
    CHROMIUM,
    CHROMIUM_FLAGS,
    PlayerPage,
)
from tests.browser.test_player_access import watch_policy_violations
from tests.live_server import LiveServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

pytestmark = [pytest.mark.browser, pytest.mark.webrtc]

# A fresh server loads the demo avatar on its first session: slow on a busy machine.
STEP_TIMEOUT_SECONDS = 30.0
LONG_TEXT = (
    "Hello, I am the avatar of this server. I will keep talking for a while, "
    "so that there is time to interrupt me before I am done."
)


RECORDING_SECONDS = 1.5


@pytest.fixture(scope="module")
def chromium_with_microphone(playwright: Playwright, live_server: LiveServer) -> Iterator[Browser]:
    """Chromium with its fake microphone (a beeping tone), which it lets the server's
    page use: the page is plain http on a non-loopback address, which Chromium otherwise
    denies a microphone."""
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        args=[
            *CHROMIUM_FLAGS, AUTOPLAY_ALLOWED,
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--unsafely-treat-insecure-origin-as-secure={live_server.url}",
        ],
    )
    yield browser
    browser.close()


def open_demo(tab: PlayerPage, live_server: LiveServer) -> None:
    tab.open(f"{live_server.url}/")
    deadline = time.monotonic() + STEP_TIMEOUT_SECONDS
    while not (tab.page.text_content("#log") or "").startswith("Engine: demo"):
        assert time.monotonic() < deadline, tab.page.text_content("#log")
        tab.wait(0.05)


def logged_events(tab: PlayerPage) -> list[tuple[str, Any]]:
    """(type, data) of every entry in the page's events log."""
    entries = tab.page.eval_on_selector_all(
        "#events li", "items => items.map(i => [i.dataset.type, i.lastChild.textContent])"
    )
    return [(kind, json.loads(text)) for kind, text in entries]


def wait_for_event(
    tab: PlayerPage, wanted: Callable[[str, Any], bool], what: str
) -> dict[str, Any]:
    # Polled from here: wait_for_function would evaluate a string, which the policy forbids.
    deadline = time.monotonic() + STEP_TIMEOUT_SECONDS
    while True:
        found = [data for kind, data in logged_events(tab) if wanted(kind, data)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no {what} in the log: {logged_events(tab)}"
        tab.wait(0.05)


def test_a_newcomer_says_text_interrupts_it_and_sees_the_events(
    live_server: LiveServer, new_tab: Callable[..., PlayerPage]
) -> None:
    tab = new_tab()
    refused = watch_policy_violations(tab)
    open_demo(tab, live_server)

    tab.page.click("#start")
    wait_for_event(tab, lambda kind, data: kind == "state" and data["state"] == "idle", "idle state")

    tab.page.select_option("#mode", "interrupt")
    tab.page.fill("#text", LONG_TEXT)
    tab.page.click("#say")
    queued = wait_for_event(tab, lambda kind, _: kind == "utterance_queued", "utterance_queued")
    assert queued["mode"] == "interrupt"
    uid = queued["utterance_id"]
    wait_for_event(
        tab, lambda kind, data: kind == "speaking_started" and data["utterance_id"] == uid,
        "speaking_started",
    )

    tab.page.click("#interrupt")
    cut = wait_for_event(
        tab, lambda kind, data: kind == "utterance_interrupted" and data["utterance_id"] == uid,
        "utterance_interrupted",
    )
    assert 0 < cut["played_seconds"] < cut["duration_seconds"]
    assert tab.page.is_disabled("#chat-send")  # no LLM on the test server: the page says why
    assert "LLM_URL" in (tab.page.text_content("#chat-note") or "")
    assert refused == []

    tab.page.click("#stop")
    wait_for_event(tab, lambda kind, _: kind == "session_ended", "session_ended")


def test_a_recording_from_the_microphone_is_spoken(
    live_server: LiveServer, new_tab: Callable[..., PlayerPage], chromium_with_microphone: Browser
) -> None:
    tab = new_tab(browser=chromium_with_microphone)
    refused = watch_policy_violations(tab)
    open_demo(tab, live_server)
    tab.page.click("#start")
    wait_for_event(tab, lambda kind, data: kind == "state" and data["state"] == "idle", "idle state")

    tab.page.click("#mic")
    # The button changes once the browser has granted the microphone (a promise later).
    tab.page.locator("#mic", has_text="Stop and send").wait_for(timeout=10_000)
    tab.wait(RECORDING_SECONDS)
    tab.page.click("#mic")
    queued = wait_for_event(tab, lambda kind, _: kind == "utterance_queued", "utterance_queued")
    assert queued["duration_seconds"] == pytest.approx(RECORDING_SECONDS, abs=0.5)
    wait_for_event(
        tab,
        lambda kind, data: kind == "speaking_ended" and data["utterance_id"] == queued["utterance_id"],
        "speaking_ended",
    )
    assert tab.page.text_content("#mic") == "Talk"
    assert refused == []
