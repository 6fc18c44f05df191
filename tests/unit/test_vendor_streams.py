"""The pieces of the D-ID-shaped surfaces: the Janus wire form, the audio_url checks,
the resolution a stream asks for."""

from __future__ import annotations

import pytest

from server.sessions.events import SessionEvent
from server.vendors.audio_url import AudioUrlError, check_url, checked_address, host_allowed
from server.vendors.janus import JANUS
from server.vendors.streams import StreamError, output_height


def published(type: str, **fields: object) -> SessionEvent:
    return SessionEvent(type, {"session_id": "s1", **fields}, seq=1)


def test_janus_tells_ready_started_done_and_error_in_subject_payload_form() -> None:
    snapshot = SessionEvent("state", {"session_id": "s1", "state": "idle"})
    assert JANUS.encode(snapshot) == ['stream/ready:{"metadata":{"session_id":"s1"}}']
    assert JANUS.encode(published("speaking_started", utterance_id="u1")) == [
        'stream/started:{"metadata":{"videoId":"u1"}}'
    ]
    for ending in ("speaking_ended", "utterance_interrupted", "utterance_cancelled"):
        assert JANUS.encode(published(ending, utterance_id="u1")) == [
            'stream/done:{"metadata":{"videoId":"u1"}}'
        ]
    (error,) = JANUS.encode(published("error", utterance_id="u1", detail="render failed"))
    assert error.startswith("stream/error:") and "render failed" in error
    assert JANUS.encode(published("state", state="speaking")) == []
    assert JANUS.encode(published("utterance_queued", utterance_id="u1")) == []


@pytest.mark.parametrize(
    ("host", "allowed", "expected"),
    [
        ("cdn.example.org", ("cdn.example.org",), True),
        ("CDN.example.org.", ("cdn.example.org",), True),
        ("a.cdn.example.org", ("*.example.org",), True),
        ("example.org", ("*.example.org",), False),
        ("evil-example.org", ("*.example.org",), False),
        ("anything.test", ("*",), True),
        ("cdn.example.org", (), False),
    ],
)
def test_hosts_are_allowed_only_as_listed(host: str, allowed: tuple[str, ...], expected: bool) -> None:
    assert host_allowed(host, allowed) is expected


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("ftp://cdn.example.org/a.wav", 400),
        ("file:///etc/passwd", 400),
        ("http://user:secret@cdn.example.org/a.wav", 400),
        ("http://cdn.example.org:99999/a.wav", 400),
        ("https://other.example.com/a.wav", 403),
    ],
)
def test_urls_other_than_http_to_a_listed_host_are_refused(url: str, status: int) -> None:
    with pytest.raises(AudioUrlError) as refused:
        check_url(url, ("cdn.example.org",))
    assert refused.value.status == status


async def test_a_wildcard_host_resolving_to_loopback_or_private_addresses_is_refused() -> None:
    for host in ("127.0.0.1", "10.1.2.3", "169.254.169.254", "::1", "::ffff:127.0.0.1"):
        with pytest.raises(AudioUrlError) as refused:
            await checked_address(host, 80, ("*",))
        assert refused.value.status == 403 and "private" in refused.value.message


async def test_a_host_listed_exactly_may_be_private_and_is_connected_to_as_resolved() -> None:
    assert await checked_address("127.0.0.1", 80, ("127.0.0.1",)) == "127.0.0.1"


@pytest.mark.parametrize(
    ("given", "height"), [(None, None), ("", None), (720, 720), ("720p", 720), ("1280x720", 720), (" 256 ", 256)]
)
def test_a_resolution_is_read_as_a_height(given: object, height: int | None) -> None:
    assert output_height(given) == height  # type: ignore[arg-type]


@pytest.mark.parametrize("given", [4320, "8k", "12", "1920x0", "-5"])
def test_an_unusable_resolution_is_422(given: object) -> None:
    with pytest.raises(StreamError) as refused:
        output_height(given)  # type: ignore[arg-type]
    assert refused.value.status == 422
