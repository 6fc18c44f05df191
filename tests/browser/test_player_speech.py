"""Speech in the hosted player: an upload makes the page live, and the mouth moves."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from tests.audio_files import encode, speech_like
from tests.browser.player_page import (
    CREATE_SCRIPT,
    REACT_NATIVE_SCRIPT,
    UPLOAD_SCRIPT,
    PlayerPage,
)
from tests.live_server import LiveServer
from tests.webrtc_client import MOUTH_BOX, mouth_dark_share

pytestmark = [pytest.mark.browser, pytest.mark.webrtc]


def mouth(image: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = MOUTH_BOX
    return image[y1:y2, x1:x2].astype(np.float32)


def test_uploaded_speech_makes_the_page_live_moves_the_mouth_and_returns_to_ready(
    player: PlayerPage, session: dict[str, Any], speak: Callable[..., dict[str, Any]]
) -> None:
    player.wait_for_state("ready")
    player.wait_for_frames(5)
    idle = player.screenshot()

    utterance = speak(session, seconds=2.0)
    player.wait_for_state("live", timeout=10)
    speaking = []
    while player.states()[-1] == "live" and len(speaking) < 12:
        speaking.append(player.screenshot())
    player.wait_for_state("ready", count=2, timeout=10)

    # Closed, the mouth box is nearly all skin and lips; open, a third of it is dark.
    # Between two idle frames it differs by about 10 (of 255): the head sways.
    assert mouth_dark_share(idle) < 0.05
    assert max(mouth_dark_share(image) for image in speaking) > 0.2
    difference = max(np.abs(mouth(image) - mouth(idle)).mean() for image in speaking)
    assert difference > 30, difference
    assert player.states() == ["connecting", "ready", "live", "ready"]
    said = [m for m in player.messages() if m["type"] == "speaking"]
    assert [(m["speaking"], m["utterance_id"]) for m in said] == [
        (True, utterance["utterance_id"]),
        (False, utterance["utterance_id"]),
    ]


def test_the_react_native_flow_create_open_the_player_upload_form_data(
    new_tab: Callable[..., PlayerPage], live_server: LiveServer, api: httpx.Client
) -> None:
    app = new_tab()
    app.open(f"{live_server.url}/health")  # the app's requests, made from the server's origin
    session = app.page.evaluate(CREATE_SCRIPT)
    try:
        webview = new_tab(REACT_NATIVE_SCRIPT)
        webview.open(session["player_url"])
        webview.wait_for_state("ready", channel="native")

        audio = base64.b64encode(encode(speech_like(1.5), "m4a")).decode()
        started = time.monotonic()
        upload = app.page.evaluate(
            UPLOAD_SCRIPT, {"sessionId": session["session_id"], "audio": audio}
        )
        assert upload["status"] == 200, upload
        assert upload["body"]["source"]["codec"] == "aac"
        webview.wait_for_state("live", channel="native", timeout=10)
        assert time.monotonic() - started < 5
        webview.wait_for_state("ready", count=2, channel="native", timeout=10)
    finally:
        api.delete(f"/webrtc/sessions/{session['session_id']}")
    webview.wait_for_state("ended", channel="native", timeout=5)
    assert all(isinstance(text, str) for text in webview.raw_messages("native"))
