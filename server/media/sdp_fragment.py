"""Trickle ICE SDP fragments (RFC 8840, `application/trickle-ice-sdpfrag`), as WHEP and
WHIP clients PATCH them: the ICE credentials, and candidates under their media section."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.refusal import Refusal

UFRAG = "a=ice-ufrag:"
PWD = "a=ice-pwd:"
MID = "a=mid:"
CANDIDATE = "a=candidate:"
END_OF_CANDIDATES = "a=end-of-candidates"
MEDIA = "m="


class FragmentError(Refusal):
    """A body that is not a trickle ICE fragment (400)."""


@dataclass
class SdpFragment:
    ufrag: str | None = None
    pwd: str | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    """RTCIceCandidateInit dicts: `candidate`, `sdpMid`, `sdpMLineIndex`."""
    end_of_candidates: bool = False


def parse_fragment(text: str) -> SdpFragment:
    """The credentials and candidates of `text`; other lines are ignored (RFC 8840 allows
    more attributes than these)."""
    fragment = SdpFragment()
    index = 0
    mid: str | None = None
    seen_media = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(MEDIA):
            index += 1 if seen_media else 0
            seen_media = True
            mid = None
        elif line.startswith(MID):
            mid = line[len(MID) :]
        elif line.startswith(UFRAG):
            fragment.ufrag = fragment.ufrag or line[len(UFRAG) :]
        elif line.startswith(PWD):
            fragment.pwd = fragment.pwd or line[len(PWD) :]
        elif line.startswith(CANDIDATE):
            fragment.candidates.append(
                {"candidate": line[2:], "sdpMid": mid, "sdpMLineIndex": index}
            )
        elif line == END_OF_CANDIDATES:
            fragment.end_of_candidates = True
        elif line and "=" not in line[:2]:
            raise FragmentError(f"Not an SDP fragment line: {line[:80]!r}.")
    return fragment


def ice_credentials(sdp: str) -> tuple[str | None, str | None]:
    """The first `a=ice-ufrag` and `a=ice-pwd` of a (remote) description."""
    found = parse_fragment(sdp)
    return found.ufrag, found.pwd
