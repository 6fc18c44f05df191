"""What WHEP's headers and fragments say: ICE servers as Link headers, trickle fragments."""

from __future__ import annotations

import pytest

from server.api.whep import ice_server_links
from server.media.sdp_fragment import FragmentError, parse_fragment


def test_each_ice_server_url_is_a_link_with_its_credentials() -> None:
    links = ice_server_links(
        [
            {"urls": ["stun:stun.test:3478"]},
            {"urls": ["turn:turn.test:3478?transport=udp", "turns:turn.test:5349"],
             "username": "1700000000:abc", "credential": 'pa"ss'},
        ]
    )
    assert links == [
        '<stun:stun.test:3478>; rel="ice-server"',
        '<turn:turn.test:3478?transport=udp>; rel="ice-server"; username="1700000000:abc"; '
        'credential="pa\\"ss"; credential-type="password"',
        '<turns:turn.test:5349>; rel="ice-server"; username="1700000000:abc"; '
        'credential="pa\\"ss"; credential-type="password"',
    ]


def test_a_single_url_string_is_one_link() -> None:
    assert ice_server_links([{"urls": "stun:stun.test"}]) == ['<stun:stun.test>; rel="ice-server"']


def test_a_fragment_gives_credentials_and_candidates_under_their_mid() -> None:
    fragment = parse_fragment(
        "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
        "a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n"
        "a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0\r\n"
        "a=end-of-candidates\r\n"
    )
    assert (fragment.ufrag, fragment.pwd) == ("EsAw", "P2uYro0UCOQ4zxjKXaWCBui1")
    assert [(c["sdpMid"], c["sdpMLineIndex"]) for c in fragment.candidates] == [("0", 0), ("1", 1)]
    assert fragment.candidates[0]["candidate"].startswith("candidate:1387637174 ")
    assert fragment.end_of_candidates


def test_a_body_that_is_not_sdp_lines_is_refused() -> None:
    with pytest.raises(FragmentError):
        parse_fragment("hello world")
