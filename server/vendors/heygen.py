"""HeyGen Streaming API v1 on this server's sessions: the calls, the states, the errors.

HeyGen's v1 flow is a server offer: `streaming.new` creates a session and answers the
server's SDP offer (audio, video and a data channel the server opened, speaking HeyGen's
events: server/vendors/heygen_events.py); `streaming.start` takes the client's answer,
`streaming.ice` its candidates (kept when they come before the answer); `streaming.task`
speaks text (or runs a chat turn), `streaming.interrupt` cuts it, `streaming.stop` ends
the session. A HeyGen session id is the session's own id: the native API works on it too.

HeyGen's states (new, connecting, connected, closed) are read off the session; a call
made in the wrong one is refused with HeyGen's code for the state the session is in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiortc.sdp import SessionDescription

from server.api.access import AccessRefused, load_api_keys
from server.api.rate_limit import RateLimitedError
from server.avatars.errors import AvatarNotFoundError
from server.chat.turn import ChatBusyError, ChatTurn
from server.core import AvatarServer
from server.media.candidates import CandidateError
from server.refusal import Refusal
from server.sessions.queue import BusyError, SpeechMode
from server.sessions.admission import CapacityError
from server.sessions.registry import SessionNotFoundError, TooManySessionsError
from server.sessions.session import (
    NegotiationError,
    NotConnectedError,
    Session,
    SessionClosedError,
    SessionParams,
)
from server.sessions.text_speech import TextError, speak_text
from server.vendors.heygen_events import CHANNEL_LABEL, HEYGEN

if TYPE_CHECKING:
    from server.api.heygen_schemas import NewSessionRequest

# HeyGen's error codes (its API reference, "Error Responses").
STATE_CODES = {"new": 10001, "connecting": 10002, "connected": 10003, "closing": 10004, "closed": 10005}
SESSION_NOT_FOUND = 10006
CONCURRENT_LIMIT = 10007
AVATAR_NOT_FOUND = 10012
SESSION_FULL = 10014
UNAUTHORIZED = 400112
INVALID_PARAMETER = 400175
INVALID_QUERY = 400128
INVALID_TEXT = 40039
RATE_LIMITED = 400123
MESSAGES = {
    SESSION_NOT_FOUND: "Session not found",
    CONCURRENT_LIMIT: "Concurrent limit reached",
    AVATAR_NOT_FOUND: "Avatar not found",
    SESSION_FULL: "Session full",
    UNAUTHORIZED: "Unauthorized",
    INVALID_PARAMETER: "Invalid parameter",
    INVALID_QUERY: "Invalid querying parameter",
    INVALID_TEXT: "Invalid text detected",
    RATE_LIMITED: "Exceed rate limit",
}
DEFAULT_AVATAR_NAME = "default"
SUPPORTED_VERSION = "v1"
MAX_STOPPED_REMEMBERED = 1024
"""Ids of stopped sessions kept to answer later calls 'closed' (10005), not 'not found'."""
STOP_REASON = "stopped by the client (streaming.stop)"
CHAT_TASK_TYPES = ("chat", "talk")
TOKEN_CONTEXT = b"avatar-server heygen token\n"
"""Mixed into the signing secret, so that it is used for nothing else."""
MAX_EXPIRY_DIGITS = 15
TOKEN_BYTES = 32


class HeygenRefusal(Refusal):
    """A refusal as HeyGen answers it: its HTTP status, HeyGen's `code`, and a message."""

    def __init__(self, code: int, message: str, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, status)
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


def _refusal(code: int, status: int, sentence: str, error: Refusal | None = None) -> HeygenRefusal:
    headers = error.headers if error is not None else None
    return HeygenRefusal(code, f"{MESSAGES.get(code, 'Error')}: {sentence}", status, headers)


def state_refusal(state: str, sentence: str) -> HeygenRefusal:
    return HeygenRefusal(STATE_CODES[state], f"Session state wrong: {state}. {sentence}", 400)


def as_heygen(error: Refusal) -> HeygenRefusal:
    """`error` (any refusal of the server) in HeyGen's terms; its status kept unless HeyGen
    answers that case with another one."""
    if isinstance(error, HeygenRefusal):
        return error
    sentence = error.message
    if isinstance(error, AccessRefused):
        return _refusal(UNAUTHORIZED, error.status, sentence, error)
    if isinstance(error, SessionNotFoundError):
        return _refusal(SESSION_NOT_FOUND, 404, sentence)
    if isinstance(error, SessionClosedError):
        return state_refusal("closed", sentence)
    if isinstance(error, AvatarNotFoundError):
        return _refusal(AVATAR_NOT_FOUND, 404, sentence)
    if isinstance(error, (TooManySessionsError, CapacityError)):
        # 503 as the native API, so that a proxy retries a create on another node.
        refusal = _refusal(CONCURRENT_LIMIT, error.status, sentence, error)
        _retry_after(refusal, error)
        return refusal
    if isinstance(error, RateLimitedError):
        refusal = _refusal(RATE_LIMITED, 429, sentence, error)
        _retry_after(refusal, error)
        return refusal
    if isinstance(error, (BusyError, ChatBusyError)):
        refusal = _refusal(SESSION_FULL, 429, sentence, error)
        _retry_after(refusal, error)
        return refusal
    if isinstance(error, TextError):
        return _refusal(INVALID_TEXT, error.status, sentence)
    if isinstance(error, (NegotiationError, CandidateError)):
        return _refusal(INVALID_PARAMETER, 400, sentence)
    if isinstance(error, NotConnectedError):
        return state_refusal("new", sentence)
    # Others (TTS or LLM unavailable, 5xx): their own status, the status as the code.
    return HeygenRefusal(error.status, sentence, error.status, error.headers)


def _retry_after(refusal: HeygenRefusal, error: Refusal) -> None:
    seconds = error.extra.get("retry_after_seconds")
    if seconds is not None:
        refusal.headers["Retry-After"] = str(max(1, int(-(-seconds // 1))))


def invalid_body(sentence: str) -> HeygenRefusal:
    """The 422 of a body that is not the JSON object described."""
    return _refusal(INVALID_QUERY, 422, sentence)


def heygen_state(session: Session) -> str:
    """new (the offer awaits its answer), connecting, connected, or closed."""
    if session.closed or session.connection_state in ("none", "failed", "closed"):
        return "closed"
    if session.remote_sdp is None:
        return "new"
    return "connected" if session.connected else "connecting"


@dataclass(frozen=True)
class NewSession:
    session: Session
    sdp: str
    ice_servers: list[dict[str, Any]]


@dataclass(frozen=True)
class Task:
    task_id: str
    duration_ms: float


class HeygenTokens:
    """Tokens from `streaming.create_token`: each stands in for the API key on the
    `/v1/streaming.*` calls (as `Authorization: Bearer`) until it expires, so that a
    browser never holds the key.

    A token is its expiry (epoch milliseconds) and random bytes, signed (HMAC-SHA256) with a
    secret derived from the server's API keys: nothing is stored, so a token minted by one
    node is good on every node that has the same keys (behind a proxy, README "Several
    nodes behind nginx"), and it survives restarts. Changing the keys ends every token."""

    def __init__(self, ttl_seconds: float, api_keys: Iterable[str]) -> None:
        self._ttl = ttl_seconds
        material = "\n".join(sorted(api_keys)).encode("utf-8", "surrogatepass")
        self._secret = hashlib.sha256(TOKEN_CONTEXT + material).digest()

    def mint(self) -> str:
        expiry = int((time.time() + self._ttl) * 1000)
        body = f"{expiry}.{secrets.token_urlsafe(TOKEN_BYTES)}"
        return f"{body}.{self._sign(body)}"

    def valid(self, token: str) -> bool:
        body, _, signature = token.rpartition(".")
        expiry, dot, _ = body.partition(".")
        if not dot or not expiry.isdigit() or len(expiry) > MAX_EXPIRY_DIGITS:
            return False
        if not hmac.compare_digest(signature, self._sign(body)):
            return False
        return int(expiry) > time.time() * 1000

    def _sign(self, body: str) -> str:
        mac = hmac.new(self._secret, body.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


class HeygenStreaming:
    """The sessions made through `streaming.new`: their voices, and the stopped ones."""

    def __init__(self, server: AvatarServer) -> None:
        self._server = server
        self._voices: dict[str, str | None] = {}
        """The TTS voice of each HeyGen session (None: the default)."""
        self._stopped: OrderedDict[str, None] = OrderedDict()
        self.tokens = HeygenTokens(
            server.settings.heygen_token_ttl_seconds, load_api_keys(server.settings)
        )

    async def new(self, request: NewSessionRequest) -> NewSession:
        """Create a session and its server offer for a `NewSessionRequest`."""
        server, settings = self._server, self._server.settings
        if request.version not in (None, "", SUPPORTED_VERSION):
            raise _refusal(
                INVALID_PARAMETER, 400,
                f"version {request.version!r} (LiveKit) is not served here: leave it out to use "
                "v1 (raw WebRTC).",
            )
        prompt = request.knowledge_base
        if prompt is not None and len(prompt) > settings.chat_max_message_chars:
            raise _refusal(
                INVALID_PARAMETER, 422,
                f"knowledge_base is longer than {settings.chat_max_message_chars} characters "
                "(CHAT_MAX_MESSAGE_CHARS).",
            )
        avatar = self._avatar(request.avatar_id or request.avatar_name)
        voice_id = request.voice.voice_id if request.voice is not None else None
        self._forget_ended()
        session = await server.sessions.create(SessionParams(avatar_id=avatar))
        if prompt:
            session.conversation.system_prompt = prompt
        self._voices[session.id] = voice_id if voice_id in server.tts.voices() else None
        offer = await session.create_offer(CHANNEL_LABEL, HEYGEN)
        return NewSession(session, offer.sdp, session.ice_servers.current())

    def _avatar(self, name: str | None) -> str:
        settings, avatars = self._server.settings, self._server.avatars
        if not name or name == DEFAULT_AVATAR_NAME:
            return settings.heygen_default_avatar
        if avatars.exists(name):
            return name
        if settings.heygen_avatar_fallback:
            return settings.heygen_avatar_fallback
        raise _refusal(
            AVATAR_NOT_FOUND, 404,
            f"no avatar {name!r} on this server (available: {', '.join(avatars.available())}); "
            "name one of them, or set HEYGEN_AVATAR_FALLBACK.",
        )

    def session(self, session_id: str, *allowed: str) -> Session:
        """The live session `session_id`, its idle timer reset, in one of the `allowed`
        HeyGen states (any when none is given)."""
        if session_id in self._stopped:
            raise state_refusal("closed", f"session {session_id!r} was stopped; create another with streaming.new.")
        try:
            session = self._server.sessions.get(session_id)
        except SessionNotFoundError:
            raise _refusal(
                SESSION_NOT_FOUND, 404,
                f"no session {session_id!r} (it never existed, or it ended); create one with streaming.new.",
            ) from None
        state = heygen_state(session)
        if allowed and state not in allowed:
            raise state_refusal(state, _advice(state))
        return session

    async def start(self, session_id: str, sdp_type: str, sdp: str) -> None:
        """Apply the client's answer to the offer of `streaming.new`."""
        session = self.session(session_id, "new")
        if sdp_type != "answer":
            raise _refusal(INVALID_PARAMETER, 400, f"sdp.type must be 'answer' (the answer to streaming.new's offer), not {sdp_type!r}.")
        try:
            parsed = SessionDescription.parse(sdp)
        except Exception as error:  # aiortc raises assorted errors for bad SDP
            raise _refusal(INVALID_PARAMETER, 400, f"sdp.sdp is not a usable SDP answer ({error}).") from None
        if not parsed.media:
            raise _refusal(INVALID_PARAMETER, 400, "sdp.sdp has no media section: send the answer your RTCPeerConnection made.")
        await session.accept_answer(sdp)

    async def ice(self, session_id: str, candidate: dict[str, Any]) -> None:
        session = self.session(session_id, "new", "connecting", "connected")
        await session.add_candidate(candidate)

    async def task(self, session_id: str, text: str, task_type: str) -> Task:
        """Speak `text` (repeat) or answer it through the LLM (chat, talk), after what the
        avatar is saying; the task is its first utterance."""
        server, settings = self._server, self._server.settings
        session = self.session(session_id, "connected")
        voice = self._voices.get(session.id)
        if task_type in CHAT_TASK_TYPES:
            if len(text) > settings.chat_max_message_chars:
                raise _refusal(INVALID_TEXT, 422, f"the message is longer than {settings.chat_max_message_chars} characters (CHAT_MAX_MESSAGE_CHARS).")
            turn = ChatTurn(
                session, session.conversation, server.llm, server.tts, voice, SpeechMode.QUEUE,
                settings.llm_max_reply_chars, settings.tts_max_chars, settings.max_audio_seconds,
            )
            result = await turn.run(text)
            if not result.sentences:
                raise HeygenRefusal(502, "The LLM's reply had nothing to say.", 502)
            seconds = sum(s.duration_seconds for s in result.sentences)
            return Task(result.sentences[0].utterance_id, round(seconds * 1000, 1))
        spoken = await speak_text(
            session, server.tts, text, voice, SpeechMode.QUEUE, False,
            settings.tts_max_chars, settings.max_audio_seconds,
        )
        utterance = spoken.admission.utterance
        return Task(utterance.id, round(utterance.duration * 1000, 1))

    def interrupt(self, session_id: str) -> None:
        """Stop what the avatar says and drop what was queued (nothing when it is silent)."""
        self.session(session_id).interrupt(keep_queue=False)

    def keep_alive(self, session_id: str) -> None:
        self.session(session_id)  # the look-up resets the idle timer

    async def stop(self, session_id: str) -> None:
        self.session(session_id)
        await self._server.sessions.close(session_id, STOP_REASON)
        self._voices.pop(session_id, None)
        self._stopped[session_id] = None
        while len(self._stopped) > MAX_STOPPED_REMEMBERED:
            self._stopped.popitem(last=False)

    def listed(self) -> list[tuple[Session, str]]:
        """The live HeyGen sessions with their states (closed ones left out)."""
        self._forget_ended()
        found = []
        for session_id in self._voices:
            session = self._server.sessions.find(session_id)
            if session is not None and (state := heygen_state(session)) != "closed":
                found.append((session, state))
        return found

    def _forget_ended(self) -> None:
        for session_id in [s for s in self._voices if self._server.sessions.find(s) is None]:
            del self._voices[session_id]


def _advice(state: str) -> str:
    return {
        "new": "Call streaming.start with the answer to the offer of streaming.new first.",
        "connecting": "The connection is not up yet: wait for it, then try again.",
        "connected": "The session is already started.",
        "closed": "Its connection has ended; create a new session with streaming.new.",
    }[state]


def ice_servers2(servers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The session's ICE servers in HeyGen's `ice_servers2` form (urls always a list)."""
    result = []
    for entry in servers:
        urls = entry["urls"]
        item: dict[str, Any] = {"urls": [urls] if isinstance(urls, str) else list(urls)}
        if entry.get("username") is not None:
            item.update(username=entry["username"], credential=entry.get("credential") or "",
                        credentialType="password")
        result.append(item)
    return result
