"""The browser tests' world: the server on a real socket in the test network namespace,
headless Chromium, a fresh tab per test.

They run only where Chromium can make a WebRTC connection without any packet leaving
the machine: inside the namespace scripts/test makes. Elsewhere they are skipped with
the reason, except in CI (`CI` set), where that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.audio_files import encode, speech_like
from tests.browser.player_page import (
    CHROMIUM,
    VIEWPORT,
    PlayerPage,
    launch_chromium,
)
from tests.conftest import make_settings
from tests.live_server import NETNS_HOST_ADDRESS, LiveServer, in_test_network_namespace

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright


def why_browser_tests_cannot_run() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[test]')"
    if not CHROMIUM.exists():
        return f"no {CHROMIUM}: install Debian's chromium (./scripts/test does)"
    if not in_test_network_namespace():
        return (
            f"not in the test network namespace (no {NETNS_HOST_ADDRESS} here): "
            "run the suite with ./scripts/test"
        )
    return None


@pytest.fixture(scope="session")
def live_server() -> Iterator[LiveServer]:
    reason = why_browser_tests_cannot_run()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests, but {reason}")
        pytest.skip(reason)
    # ICE on the namespace's veth address: Chromium gathers on non-loopback interfaces.
    settings = make_settings(ice_host_addresses=(NETNS_HOST_ADDRESS,))
    server = LiveServer(settings).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def playwright(live_server: LiveServer) -> Iterator[Playwright]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def chromium(playwright: Playwright) -> Iterator[Browser]:
    browser = launch_chromium(playwright)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def chromium_without_autoplay(playwright: Playwright) -> Iterator[Browser]:
    """Chromium that, like iOS Safari, plays sound only after the user touched the page."""
    browser = launch_chromium(playwright, autoplay=False)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def api(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=15.0) as client:
        yield client


@pytest.fixture
def session(api: httpx.Client) -> Iterator[dict[str, Any]]:
    """A new session (the `create` response); deleted afterwards if it still exists."""
    created = api.post("/webrtc/sessions/create").raise_for_status().json()
    yield created
    api.delete(f"/webrtc/sessions/{created['session_id']}")


@pytest.fixture
def new_tab(chromium: Browser) -> Iterator[Callable[..., PlayerPage]]:
    """Opens tabs, each in a fresh browser context (with `options`), RECORDER_SCRIPT and
    `scripts` injected."""
    contexts = []

    def open_tab(*scripts: str, browser: Browser | None = None, **options: Any) -> PlayerPage:
        context = (browser or chromium).new_context(viewport=VIEWPORT, **options)
        contexts.append(context)
        return PlayerPage(context, scripts)

    yield open_tab
    for context in contexts:
        context.close()


@pytest.fixture
def open_player(
    new_tab: Callable[..., PlayerPage], session: dict[str, Any]
) -> Callable[..., PlayerPage]:
    """Opens the session's player_url, with `query`, in a new tab (see `new_tab`)."""

    def open_tab(
        query: str = "", *scripts: str, browser: Browser | None = None, **options: Any
    ) -> PlayerPage:
        tab = new_tab(*scripts, browser=browser, **options)
        url = session["player_url"]  # it has a query already: the token
        tab.open(url + query.replace("?", "&", 1) if "?" in url else url + query)
        return tab

    return open_tab


@pytest.fixture
def player(open_player: Callable[..., PlayerPage]) -> PlayerPage:
    """The session's player_url open in a tab."""
    return open_player()


@pytest.fixture
def speak(api: httpx.Client) -> Callable[..., dict[str, Any]]:
    """Uploads `seconds` of speech-like audio to a session; returns the 200 response."""

    def upload(session: dict[str, Any], seconds: float = 1.0) -> dict[str, Any]:
        audio = encode(speech_like(seconds), "wav")
        response = api.post(
            f"/webrtc/sessions/{session['session_id']}/stream",
            files={"audio_file": ("speech.wav", audio, "audio/wav")},
        )
        assert response.status_code == 200, response.text
        return response.json()

    return upload
