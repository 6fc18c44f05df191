"""What the player tells the app embedding it, through each of the ways it tells it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.browser.player_page import REACT_NATIVE_SCRIPT, PlayerPage

pytestmark = [pytest.mark.browser, pytest.mark.webrtc]


def open_host(
    new_tab: Callable[..., PlayerPage],
    open_player: Callable[..., PlayerPage],
    url: str,
    channel: str,
) -> PlayerPage:
    """The player as each kind of host sees it: a tab, a React Native WebView, an iframe."""
    if channel == "native":
        return open_player("", REACT_NATIVE_SCRIPT)
    if channel == "framed":
        # The server's demo page, which shows the player in an iframe, pointed at it.
        tab = new_tab()
        tab.open(url.split("/player/")[0] + "/")
        tab.page.evaluate("(url) => { document.getElementById('player').src = url; }", url)
        return tab
    return open_player()


@pytest.mark.parametrize(
    "channel",
    ["events", "native", "framed"],
    ids=["dom-event", "react-native-webview", "parent-frame"],
)
def test_state_and_speaking_messages_arrive_in_order(
    new_tab: Callable[..., PlayerPage],
    open_player: Callable[..., PlayerPage],
    session: dict[str, Any],
    api: httpx.Client,
    speak: Callable[..., dict[str, Any]],
    channel: str,
) -> None:
    tab = open_host(new_tab, open_player, session["player_url"], channel)
    tab.wait_for_state("ready", channel=channel)
    utterance = speak(session, seconds=1.0)["utterance_id"]
    tab.wait_for_state("ready", count=2, channel=channel, timeout=10)
    api.delete(f"/webrtc/sessions/{session['session_id']}").raise_for_status()
    tab.wait_for_state("ended", channel=channel, timeout=5)

    messages = tab.messages(channel)
    sequence = [
        (m["type"], m.get("state", m.get("speaking")))
        for m in messages
        if m["type"] in ("state", "speaking")
    ]
    assert sequence == [
        ("state", "connecting"),
        ("state", "ready"),
        ("speaking", True),
        ("state", "live"),
        ("speaking", False),
        ("state", "ready"),
        ("state", "ended"),
    ]
    assert all(m["source"] == "avatar-player" for m in messages)
    assert all(m["session_id"] == session["session_id"] for m in messages)
    assert [m["utterance_id"] for m in messages if m["type"] == "speaking"] == [utterance] * 2
    assert messages[-1]["reason"] == "deleted by the client"
    times = [m["time"] for m in messages]
    assert times == sorted(times)
