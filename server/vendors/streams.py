"""D-ID-shaped streams (D-ID Streams and TWIN's stream package), on our sessions.

A stream is one of our sessions, negotiated the server-offer way: creating it creates
the session and the server's offer (sendonly audio and video, and a `JanusDataChannel`
the server opens), and the session also talks the Janus dialect on the
`JanusDataChannel` its client creates. The stream's `id` is the session's id; its
`session_id` is a fresh random value the client must send back with every later call
(as D-ID's clients do), so a stream id alone does not let a call through.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from aiortc import RTCSessionDescription

from server.chat.turn import ChatTurn, TurnResult
from server.core import AvatarServer
from server.refusal import Refusal
from server.sessions.queue import Admission, SpeechMode
from server.sessions.session import Session, SessionParams
from server.sessions.text_speech import speak_text
from server.vendors.audio_url import fetch_audio
from server.vendors.janus import JANUS, JANUS_LABEL

# The vendor's session_id: 128 bits.
SESSION_ID_BYTES = 16
OUTPUT_HEIGHTS = (64, 1080)
"""The video heights a stream may ask for (D-ID's `output_resolution`, TWIN's
`responseResolution`)."""
_RESOLUTION = re.compile(r"^\s*(?:(\d{1,5})\s*[xX×]\s*)?(\d{1,5})\s*[pP]?\s*$")
INVALID_SESSION_ID = "missing or invalid session_id"
"""D-ID's own wording (its client SDK retries a chat on it)."""


class StreamError(Refusal):
    """A stream call refused: 400 a wrong `session_id`, 404 an unknown stream."""


@dataclass(frozen=True)
class Spoken:
    """What a talk started: its utterance (D-ID's video) and where it went."""

    video_id: str
    duration_seconds: float
    queue_position: int


@dataclass
class VendorStream:
    stream_id: str
    session_id: str = field(repr=False)
    surface: str
    avatar_id: str


@dataclass(frozen=True)
class Created:
    stream: VendorStream
    offer: RTCSessionDescription
    ice_servers: list[dict[str, Any]]


def avatar_for(server: AvatarServer, *names: str | None) -> str:
    """The avatar a D-ID `presenter_id`, `source_url` (its file name without extension:
    `…/anna.jpg` is `anna`) or TWIN `twinId` names, the first that is one of ours;
    VENDOR_DEFAULT_AVATAR when none is."""
    for name in names:
        if not name:
            continue
        candidates = [name]
        if "/" in name or "." in name:
            path = urlsplit(name).path if "://" in name else name
            candidates.append(PurePosixPath(path).stem)
        for candidate in candidates:
            if server.avatars.exists(candidate):
                return candidate
    return server.settings.vendor_default_avatar


def output_height(resolution: int | str | None) -> int | None:
    """The video height a stream asks for: `720`, `"720"`, `"720p"` or `"1280x720"` (the
    height is what counts; the width follows the avatar's proportions). 422 outside
    OUTPUT_HEIGHTS or unreadable."""
    if resolution is None or resolution == "":
        return None
    match = _RESOLUTION.match(str(resolution))
    height = int(match.group(2)) if match else None
    low, high = OUTPUT_HEIGHTS
    if height is None or not low <= height <= high:
        raise StreamError(
            f"The resolution {str(resolution)[:40]!r} is not one this server sends: give a "
            f"height from {low} to {high} pixels (720, \"720p\" or \"1280x720\").",
            422,
        )
    return height


class VendorStreams:
    """The live streams of the vendor surfaces, by stream id."""

    def __init__(self) -> None:
        self._streams: dict[str, VendorStream] = {}

    async def create(
        self, server: AvatarServer, avatar_id: str, surface: str, height: int | None = None
    ) -> Created:
        """A new session for `avatar_id` (404 unknown, 503 at the limit) and its offer; its
        video scaled to `height` when given."""
        self._forget_ended(server)
        session = await server.sessions.create(SessionParams(avatar_id=avatar_id))
        try:
            session.output_height = height
            session.accept_channel(JANUS_LABEL, JANUS)
            offer = await session.create_offer(JANUS_LABEL, JANUS)
        except BaseException:
            await server.sessions.close(session.id, "its stream's offer failed")
            raise
        stream = VendorStream(
            session.id, secrets.token_urlsafe(SESSION_ID_BYTES), surface, avatar_id
        )
        self._streams[session.id] = stream
        return Created(stream, offer, session.ice_servers.current())

    def get(
        self, server: AvatarServer, stream_id: str, session_id: str | None, surface: str
    ) -> tuple[VendorStream, Session]:
        """The stream and its session: 404 unknown (or of another surface, or ended), 400
        without its `session_id`."""
        stream = self._streams.get(stream_id)
        session = server.sessions.find(stream_id)
        if session is None:
            self._streams.pop(stream_id, None)
        if stream is None or session is None or stream.surface != surface:
            raise StreamError(
                f"Stream {stream_id!r} not found (it was deleted, has expired, or was "
                "never created on this path).",
                404,
            )
        if not session_id or not secrets.compare_digest(session_id, stream.session_id):
            raise StreamError(
                f"{INVALID_SESSION_ID}: send the session_id that creating stream "
                f"{stream_id!r} answered.",
                400,
            )
        server.sessions.get(stream_id)  # the idle timer starts again
        return stream, session

    async def delete(self, server: AvatarServer, stream: VendorStream) -> None:
        self._streams.pop(stream.stream_id, None)
        await server.sessions.close(stream.stream_id, "deleted by its client")

    def _forget_ended(self, server: AvatarServer) -> None:
        for stream_id in [s for s in self._streams if server.sessions.find(s) is None]:
            del self._streams[stream_id]


async def answer(session: Session, sdp: str, kind: str) -> None:
    if kind != "answer":
        raise StreamError(f"Expected an SDP of type 'answer', got {kind!r}.", 400)
    await session.accept_answer(sdp)


async def add_candidate(
    session: Session, candidate: str | None, sdp_mid: str | None, sdp_mline_index: int | None
) -> None:
    """A trickled candidate; none (missing, null or empty) ends them."""
    await session.add_candidate(
        {"candidate": candidate or "", "sdpMid": sdp_mid, "sdpMLineIndex": sdp_mline_index}
    )


def known_voice(server: AvatarServer, voice: str | None) -> str | None:
    """`voice` when the TTS has it; otherwise None (the default voice): a hosted vendor's
    voice names (`en-US-JennyNeural`) mean nothing to a local TTS."""
    if not voice:
        return None
    try:
        server.tts.check_voice(voice)
    except Refusal:
        return None
    return voice


async def say_text(
    server: AvatarServer, session: Session, text: str, voice: str | None, mode: SpeechMode
) -> Spoken:
    settings = server.settings
    spoken = await speak_text(
        session, server.tts, text, known_voice(server, voice), mode, False,
        settings.tts_max_chars, settings.max_audio_seconds,
    )
    return _spoken(spoken.admission)


async def say_audio_url(
    server: AvatarServer, session: Session, url: str, mode: SpeechMode
) -> Spoken:
    """Fetch `url` (server.vendors.audio_url), decode it in a worker, speak it."""
    settings = server.settings
    await session.connection_settled()
    with session.receiving_speech(mode):
        data = await fetch_audio(
            url, settings.audio_url_allowed_hosts, settings.max_upload_bytes,
            settings.audio_url_timeout_seconds,
        )
        decoded = await server.decode_audio(data)
        admission = session.speak(decoded.samples, mode)
    return _spoken(admission)


async def chat_turn(
    server: AvatarServer, session: Session, message: str, mode: SpeechMode
) -> TurnResult:
    """An LLM turn (POST /chat's), spoken sentence by sentence."""
    settings = server.settings
    if len(message) > settings.chat_max_message_chars:
        raise StreamError(
            f"The message is {len(message)} characters long; the limit is "
            f"{settings.chat_max_message_chars} (CHAT_MAX_MESSAGE_CHARS).",
            422,
        )
    turn = ChatTurn(
        session, session.conversation, server.llm, server.tts, None, mode,
        settings.llm_max_reply_chars, settings.tts_max_chars, settings.max_audio_seconds,
    )
    return await turn.run(message)


def _spoken(admission: Admission) -> Spoken:
    utterance = admission.utterance
    return Spoken(utterance.id, round(utterance.duration, 3), admission.position)
