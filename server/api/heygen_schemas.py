"""The request and response shapes of the HeyGen Streaming API v1 surface (`/v1/streaming.*`),
with HeyGen's field names. Fields HeyGen's clients send that mean nothing here are
accepted and ignored (README, "Coming from HeyGen")."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

SUCCESS_CODE = 100
SUCCESS_MESSAGE = "success"
MAX_ID_CHARS = 128
MAX_SDP_CHARS = 64 * 1024


class HeygenError(BaseModel):
    """Every refusal, as HeyGen answers it: `code` is HeyGen's error code (README,
    "Coming from HeyGen"), `message` its text followed by what to do."""

    code: int
    message: str


class HeygenSdp(BaseModel):
    type: Literal["offer", "answer", "pranswer", "rollback"]
    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS)


class VoiceSetting(BaseModel):
    voice_id: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    """Used when it names one of the TTS backend's voices; else the default voice."""
    rate: float | None = Field(default=None, gt=0, le=4)
    """Accepted, not applied."""
    emotion: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    """Accepted, not applied."""


class NewSessionRequest(BaseModel):
    quality: Literal["low", "medium", "high"] | None = None
    """Accepted; the stream has the avatar's own resolution."""
    avatar_name: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    avatar_id: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    voice: VoiceSetting | None = None
    video_encoding: Literal["H264", "VP8"] | None = None
    """Accepted; the codec is what the client's answer chooses from the offer."""
    knowledge_base: str | None = None
    """The system prompt of `task_type: chat` turns."""
    version: str | None = Field(default=None, max_length=16)
    """Only v1 (raw WebRTC) is served: `v2` (LiveKit) is refused."""
    disable_idle_timeout: bool | None = None
    activity_idle_timeout: int | None = Field(default=None, ge=30, le=3600)


class IceServer2(BaseModel):
    urls: list[str]
    username: str | None = None
    credential: str | None = None
    credentialType: str | None = None  # noqa: N815 - HeyGen's field name


class NewSessionData(BaseModel):
    session_id: str
    sdp: HeygenSdp
    ice_servers: list[str] = Field(description="Deprecated by HeyGen: the URLs of ice_servers2.")
    ice_servers2: list[IceServer2]


class NewSessionResponse(BaseModel):
    code: int = SUCCESS_CODE
    message: str = SUCCESS_MESSAGE
    data: NewSessionData


class StartRequest(BaseModel):
    session_id: str = Field(max_length=MAX_ID_CHARS)
    sdp: HeygenSdp


class IceCandidateInit(BaseModel):
    candidate: str | None = None
    sdpMid: str | None = None  # noqa: N815 - the WebRTC field name
    sdpMLineIndex: int | None = Field(default=None, ge=0)  # noqa: N815
    usernameFragment: str | None = None  # noqa: N815


class IceRequest(BaseModel):
    session_id: str = Field(max_length=MAX_ID_CHARS)
    candidate: IceCandidateInit | None = None
    """Absent, null or an empty `candidate`: the end of candidates."""


class TaskRequest(BaseModel):
    session_id: str = Field(max_length=MAX_ID_CHARS)
    text: str
    task_type: Literal["repeat", "talk", "chat"] = "repeat"
    """repeat: say `text`; chat (and talk): `text` is the user's message to the LLM."""
    task_mode: Literal["sync", "async"] = "sync"
    """Both answer once the speech is queued (its length known)."""


class TaskData(BaseModel):
    duration_ms: float
    task_id: str


class TaskResponse(BaseModel):
    code: int = SUCCESS_CODE
    message: str = SUCCESS_MESSAGE
    data: TaskData


class SessionRequest(BaseModel):
    session_id: str = Field(max_length=MAX_ID_CHARS)


class EmptyResponse(BaseModel):
    code: int = SUCCESS_CODE
    message: str = SUCCESS_MESSAGE
    data: dict[str, Any] | None = None


class SessionSummary(BaseModel):
    session_id: str
    status: Literal["new", "connecting", "connected"]
    created_at: float


class SessionList(BaseModel):
    sessions: list[SessionSummary]


class ListResponse(BaseModel):
    code: int = SUCCESS_CODE
    message: str = SUCCESS_MESSAGE
    data: SessionList


class TokenData(BaseModel):
    token: str


class CreateTokenResponse(BaseModel):
    """HeyGen answers this call without the `code` wrapper."""

    error: None = None
    data: TokenData
