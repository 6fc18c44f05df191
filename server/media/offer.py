"""What a client's SDP offer must hold before the server lets it replace anything."""

from __future__ import annotations

from dataclasses import dataclass

from aiortc.sdp import SessionDescription

from server.refusal import Refusal

# Directions of an offered m-section (the client's view) on which the server can send.
SENDABLE_DIRECTIONS = ("recvonly", "sendrecv")
# RFC 4566: an m-section without a direction attribute is sendrecv.
DEFAULT_DIRECTION = "sendrecv"
MEDIA_KINDS = ("audio", "video")


class OfferError(Refusal):
    """An offer the session cannot use (400), or one too large to read (413)."""


@dataclass(frozen=True)
class OfferSummary:
    """What later signalling is checked against: the offer's m-sections, in order."""

    mids: tuple[str | None, ...]


def check_offer(sdp: str, max_bytes: int) -> OfferSummary:
    """Refuse an offer that cannot lead to a working connection; no await, no side effect.

    It must parse, and have an audio and a video m-section (port not 0) that the client
    receives on, each with ICE credentials and a DTLS fingerprint (its own or the
    session's).
    """
    size = len(sdp.encode("utf-8", errors="replace"))
    if size > max_bytes:
        raise OfferError(
            f"The offer is {size} bytes, more than the limit of {max_bytes}; "
            "send a plain offer (audio, video and an optional data channel).",
            413,
        )
    if not sdp.lstrip().startswith("v="):
        raise OfferError("The offer is not an SDP session description (it must start with v=0).")
    try:
        description = SessionDescription.parse(sdp)
    except Exception as error:  # aiortc raises assorted errors (and asserts) for bad SDP
        raise OfferError(f"The offer could not be parsed: {error or type(error).__name__}.") from None
    for kind in MEDIA_KINDS:
        sections = [m for m in description.media if m.kind == kind and m.port != 0]
        if not sections:
            raise OfferError(
                f"The offer has no {kind} m-section: it must receive both audio and video "
                "(add recvonly audio and video transceivers)."
            )
        usable = [m for m in sections if (m.direction or DEFAULT_DIRECTION) in SENDABLE_DIRECTIONS]
        if not usable:
            direction = sections[0].direction
            raise OfferError(
                f"The offer's {kind} is {direction}: the client must receive it "
                "(direction recvonly or sendrecv)."
            )
        for media in usable:
            if not media.ice.usernameFragment or not media.ice.password:
                raise OfferError(f"The offer's {kind} m-section has no ICE ufrag and password.")
            if not media.dtls.fingerprints:
                raise OfferError(f"The offer's {kind} m-section has no DTLS fingerprint.")
    return OfferSummary(mids=tuple(m.rtp.muxId for m in description.media))
