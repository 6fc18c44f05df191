"""Where the browser refuses sound until a tap, the video plays muted behind an overlay."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from tests.browser.player_page import VIEWPORT, PlayerPage

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.browser, pytest.mark.webrtc]


def audio_messages(player: PlayerPage) -> list[tuple[bool, bool]]:
    return [(m["enabled"], m["from_gesture"]) for m in player.messages() if m["type"] == "audio"]


def test_a_tap_on_the_overlay_enables_the_sound_of_the_video_playing_muted_behind_it(
    open_player: Callable[..., PlayerPage], chromium_without_autoplay: Browser
) -> None:
    player = open_player(browser=chromium_without_autoplay)
    player.wait_for_state("ready")
    player.wait_for_message(lambda m: m["type"] == "audio", timeout=5)

    assert player.page.is_visible("#unlock")
    assert player.page.text_content("#unlock").strip() == "Tap to enable sound"
    before = player.video_element()
    player.wait(0.5)
    muted = player.video_element()
    assert muted["muted"] and not muted["paused"]
    assert muted["currentTime"] > before["currentTime"]
    assert audio_messages(player) == [(False, False)]

    # Anywhere on the page, not only on the button.
    player.page.mouse.click(VIEWPORT["width"] / 2, VIEWPORT["height"] / 3)

    player.wait_for_message(lambda m: m["type"] == "audio", timeout=5, count=2)
    assert audio_messages(player) == [(False, False), (True, True)]
    assert not player.page.is_visible("#unlock")
    playing = player.video_element()
    assert not playing["muted"] and not playing["paused"]
    assert player.states() == ["connecting", "ready"]


def test_where_autoplay_is_allowed_there_is_no_overlay(player: PlayerPage) -> None:
    player.wait_for_state("ready")
    player.wait_for_message(lambda m: m["type"] == "audio", timeout=5)
    assert not player.page.is_visible("#unlock")
    video = player.video_element()
    assert not video["muted"] and not video["paused"]
    assert audio_messages(player) == [(True, False)]
