"""The hosted player in Chromium: it negotiates on its own, plays, reconnects and ends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.browser.player_page import PlayerPage
from tests.live_server import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.webrtc]


def test_the_page_connects_decodes_video_frames_and_receives_audio(player: PlayerPage) -> None:
    player.wait_for_state("ready")
    first = player.inbound()
    player.wait(1.0)
    later = player.inbound()

    assert later["connectionState"] == "connected"
    assert later["video"]["framesDecoded"] > first["video"]["framesDecoded"] > 0
    assert later["video"]["frameWidth"] == 512
    # The idle audio is silence, but it is sent, received and played out all the time.
    assert later["audio"]["totalSamplesReceived"] > first["audio"]["totalSamplesReceived"] > 0
    assert later["audio"]["mimeType"] == "audio/opus"
    # Its offer went first, its candidates after it, one by one, then their end.
    assert player.sent[0][0].endswith("/offer")
    assert [offer["type"] for offer in player.posted("/offer")] == ["offer"]
    candidates = [c["candidate"] for c in player.posted("/ice")]
    assert all(" typ host" in c for c in candidates[:-1]) and len(candidates) > 1
    assert candidates[-1] == ""


def test_the_video_plays_inline_and_fills_a_portrait_viewport_keeping_its_aspect_ratio(
    player: PlayerPage,
) -> None:
    player.page.set_viewport_size({"width": 390, "height": 844})
    player.wait_for_state("ready")

    video = player.video_element()
    assert (video["width"], video["height"]) == (390, 844)
    assert video["objectFit"] == "contain"
    assert video["playsInline"]
    assert not video["paused"]
    assert (video["videoWidth"], video["videoHeight"]) == (512, 512)


def test_by_default_the_page_receives_vp8(player: PlayerPage) -> None:
    player.wait_for_state("ready")
    assert player.inbound()["video"]["mimeType"] == "video/VP8"


def test_with_codec_h264_the_page_receives_h264_constrained_baseline(
    open_player: Callable[..., PlayerPage],
) -> None:
    player = open_player("?codec=h264")
    player.wait_for_state("ready")
    player.wait_for_frames(10)

    video = player.inbound()["video"]
    assert video["mimeType"] == "video/H264"
    assert "profile-level-id=42e01f" in video["sdpFmtpLine"]
    assert "packetization-mode=1" in video["sdpFmtpLine"]


# Safari, and iOS WebViews, whose user agent has no "Safari/"; Android's WebView is Chrome.
IOS_WEBVIEW = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148"
)
MAC_SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Safari/605.1.15"
)
ANDROID_WEBVIEW = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/126.0.6478.122 Mobile Safari/537.36"
)


@pytest.mark.parametrize(
    ("user_agent", "codec"),
    [(IOS_WEBVIEW, "video/H264"), (MAC_SAFARI, "video/H264"), (ANDROID_WEBVIEW, "video/VP8")],
    ids=["ios-webview", "mac-safari", "android-webview"],
)
def test_apple_browsers_and_webviews_get_h264_by_default(
    open_player: Callable[..., PlayerPage], user_agent: str, codec: str
) -> None:
    # Chromium claiming to be them: the page picks by user agent, the codec is real.
    player = open_player(user_agent=user_agent)
    player.wait_for_state("ready")
    assert player.inbound()["video"]["mimeType"] == codec


def test_a_connection_the_server_loses_makes_the_page_reconnect_with_a_new_offer(
    player: PlayerPage, live_server: LiveServer, session: dict[str, Any], api: httpx.Client
) -> None:
    player.wait_for_state("ready")
    server_session = live_server.core.sessions.get(session["session_id"])
    # As if the server's transport died: its peer connection closes under the session.
    live_server.call(server_session._pc.close())

    player.wait_for_state("ready", count=2, timeout=20)
    assert player.states() == ["connecting", "ready", "connecting", "ready"]
    assert player.peer_connections() == 2
    player.wait_for_frames(5)
    info = api.get(f"/webrtc/sessions/{session['session_id']}").json()
    assert (info["state"], info["connections"]) == ("idle", 2)


def test_deleting_the_session_ends_the_page_cleanly(
    player: PlayerPage, session: dict[str, Any], api: httpx.Client
) -> None:
    player.wait_for_state("ready")
    api.delete(f"/webrtc/sessions/{session['session_id']}").raise_for_status()

    player.wait_for_state("ended", timeout=5)
    player.wait(1.0)  # long enough for any reconnection attempt to show
    assert player.states() == ["connecting", "ready", "ended"]
    assert player.peer_connections() == 1
    assert player.page.text_content("#status") == "This session has ended."
    assert player.page.evaluate("window.__playerTest.peers[0].connectionState") == "closed"


def test_a_player_for_an_unknown_session_ends_at_once(
    new_tab: Callable[..., PlayerPage], live_server: LiveServer
) -> None:
    player = new_tab()
    player.open(f"{live_server.url}/player/no-such-session")

    player.wait_for_state("ended", timeout=5)
    assert player.messages()[-1]["reason"] == "session_not_found"
    assert player.peer_connections() == 0


def test_a_second_player_of_the_session_replaces_the_first_which_ends(
    open_player: Callable[..., PlayerPage], player: PlayerPage
) -> None:
    player.wait_for_state("ready")
    second = open_player()
    second.wait_for_state("ready")

    player.wait_for_state("ended", timeout=5)
    assert player.messages()[-1]["reason"] == "replaced"
    second.wait(1.0)
    assert second.states() == ["connecting", "ready"]
    assert second.inbound()["connectionState"] == "connected"


def test_the_debug_overlay_shows_live_stats(open_player: Callable[..., PlayerPage]) -> None:
    player = open_player("?debug=1")
    player.wait_for_state("ready")
    player.wait(2.5)  # two stats intervals: rates need two samples

    text = player.page.text_content("#debug")
    assert player.page.is_visible("#debug")
    for expected in ("fps", "kbit/s", "jitter", "rtt", "video/VP8", "audio/opus", "playing"):
        assert expected in text, text
