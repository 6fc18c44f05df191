"""Trickled ICE candidates, checked field by field (RFC 8839) before aiortc sees them."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

from aiortc import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp

from server.refusal import Refusal

CANDIDATE_PREFIX = "candidate:"
MAX_CANDIDATE_LENGTH = 1024
# RFC 8839 ice-char is ALPHA / DIGIT / "+" / "/"; a foundation has 1 to 32 of them.
FOUNDATION = re.compile(r"^[A-Za-z0-9+/]{1,32}$")
# An mDNS name hiding a browser's local address (e.g. "<uuid>.local").
MDNS_NAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+local$")
PROTOCOLS = ("udp", "tcp")
TYPES = ("host", "srflx", "prflx", "relay")
TCP_TYPES = ("active", "passive", "so")
PORT_RANGE = (1, 65535)
COMPONENT_RANGE = (1, 256)
MAX_PRIORITY = 2**32 - 1
RTP_COMPONENT = 1
# With rtcp-mux (which the server always answers with) RTCP shares component 1; a client
# that also gathers RTCP candidates (component 2) has them ignored, not refused.
RTCP_COMPONENT = 2


class CandidateError(Refusal, ValueError):
    """A trickled ICE candidate that is malformed or names no m-section of the offer (400)."""


def parse_candidate(
    init: Mapping[str, Any], mids: Sequence[str | None] | None
) -> RTCIceCandidate | None:
    """An RTCIceCandidateInit (as browsers send it) as aiortc's candidate.

    None means the end of candidates (an empty `candidate`). `mids` are the offer's
    m-sections, in order, which `sdpMid` / `sdpMLineIndex` must name (None: no offer
    yet, only the candidate itself is checked).
    """
    raw = init.get("candidate") or ""
    text = raw.strip()
    if not text:
        return None
    if len(text) > MAX_CANDIDATE_LENGTH:
        raise CandidateError(f"The ICE candidate is longer than {MAX_CANDIDATE_LENGTH} characters.")
    if text.startswith(CANDIDATE_PREFIX):
        text = text[len(CANDIDATE_PREFIX) :]
    _check_fields(raw, text.split())
    _check_m_section(init.get("sdpMid"), init.get("sdpMLineIndex"), mids)
    candidate = candidate_from_sdp(text)
    candidate.sdpMid = init.get("sdpMid")
    candidate.sdpMLineIndex = init.get("sdpMLineIndex")
    return candidate


def _check_fields(raw: str, fields: list[str]) -> None:
    """Raise CandidateError unless `fields` are a well-formed candidate."""

    def refuse(reason: str) -> CandidateError:
        return CandidateError(f"Malformed ICE candidate {raw!r}: {reason}.")

    if len(fields) < 8 or fields[6] != "typ":
        raise refuse(
            "expected 'foundation component protocol priority address port typ type ...'"
        )
    foundation, component, protocol, priority, address, port, _, kind = fields[:8]
    if not FOUNDATION.match(foundation):
        raise refuse("the foundation must be 1 to 32 letters, digits, '+' or '/'")
    component_number = _integer(component, COMPONENT_RANGE, refuse, "component")
    if component_number not in (RTP_COMPONENT, RTCP_COMPONENT):
        raise refuse(
            f"component {component_number} does not exist: this server multiplexes RTP and "
            "RTCP on component 1 (rtcp-mux)"
        )
    if protocol.lower() not in PROTOCOLS:
        raise refuse(f"the protocol must be udp or tcp, not {protocol!r}")
    _integer(priority, (1, MAX_PRIORITY), refuse, "priority")
    _check_address(address, refuse, "address")
    _integer(port, PORT_RANGE, refuse, "port")
    if kind not in TYPES:
        raise refuse(f"the type must be one of {', '.join(TYPES)}, not {kind!r}")
    extensions = fields[8:]
    if len(extensions) % 2:
        raise refuse("its extensions must come as name and value pairs")
    for name, value in zip(extensions[::2], extensions[1::2], strict=True):
        if name == "raddr":
            _check_address(value, refuse, "related address")
        elif name == "rport":
            _integer(value, (0, PORT_RANGE[1]), refuse, "related port")
        elif name == "tcptype" and value not in TCP_TYPES:
            raise refuse(f"tcptype must be one of {', '.join(TCP_TYPES)}, not {value!r}")


def _integer(text: str, bounds: tuple[int, int], refuse: Any, name: str) -> int:
    if not text.isdigit() or not bounds[0] <= int(text) <= bounds[1]:
        raise refuse(f"the {name} must be a whole number from {bounds[0]} to {bounds[1]}, not {text!r}")
    return int(text)


def _check_address(text: str, refuse: Any, name: str) -> None:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if not MDNS_NAME.match(text):
            raise refuse(f"the {name} must be an IP address or an mDNS .local name, not {text!r}") from None


def _check_m_section(mid: Any, index: Any, mids: Sequence[str | None] | None) -> None:
    if mid is None and index is None:
        raise CandidateError("An ICE candidate needs sdpMid or sdpMLineIndex.")
    if mids is None:
        return
    if mid is not None and mid not in mids:
        raise CandidateError(
            f"sdpMid {mid!r} names no m-section of the offer (its mids: "
            f"{', '.join(repr(m) for m in mids if m is not None) or 'none'})."
        )
    if index is not None:
        if not 0 <= index < len(mids):
            raise CandidateError(
                f"sdpMLineIndex {index} names no m-section of the offer "
                f"(it has {len(mids)}: 0 to {len(mids) - 1})."
            )
        if mid is not None and mids[index] != mid:
            raise CandidateError(
                f"sdpMid {mid!r} and sdpMLineIndex {index} name different m-sections of the offer."
            )
