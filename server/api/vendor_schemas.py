"""Request and answer bodies of the D-ID Streams and TWIN stream package surfaces.

Field names are the vendors'; fields their clients send that this server has no use for
are accepted and ignored (pydantic's default), so unchanged client code validates.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from server.api.schemas import IceServer

MAX_ID_CHARS = 256
MAX_SDP_CHARS = 64 * 1024
MAX_CANDIDATE_CHARS = 1024
MAX_TEXT_CHARS = 100_000  # TTS_MAX_CHARS refuses long texts with a clear message
MAX_URL_CHARS = 2048


class DidError(BaseModel):
    """D-ID's error shape (also TWIN's): the kind of error and a sentence about it."""

    kind: str = Field(description="NotFoundError, ValidationError, AuthorizationError, …")
    description: str


class JsepOffer(BaseModel):
    type: Literal["offer"] = "offer"
    sdp: str


class Jsep(BaseModel):
    type: str = Field(max_length=16)
    sdp: str = Field(max_length=MAX_SDP_CHARS)


class CreateStream(BaseModel):
    """`POST /talks/streams` (and clips, agents): all optional here."""

    source_url: str | None = Field(None, max_length=MAX_URL_CHARS)
    presenter_id: str | None = Field(None, max_length=MAX_ID_CHARS)
    driver_id: str | None = Field(None, max_length=MAX_ID_CHARS)
    stream_warmup: bool | None = None
    fluent: bool | None = None
    output_resolution: int | None = None
    session_timeout: int | None = None
    compatibility_mode: str | None = Field(None, max_length=16)


class StreamCreated(BaseModel):
    id: str = Field(description="The stream's id (this server's session id).")
    session_id: str = Field(description="Send it back with every call on the stream.")
    offer: JsepOffer
    ice_servers: list[IceServer]
    fluent: bool = True
    interrupt_enabled: bool = True


class StreamAnswer(BaseModel):
    answer: Jsep
    session_id: str | None = Field(None, max_length=MAX_ID_CHARS)


class StreamCandidate(BaseModel):
    """A trickled candidate; a missing or null `candidate` ends them."""

    candidate: str | None = Field(None, max_length=MAX_CANDIDATE_CHARS)
    sdpMid: str | None = Field(None, max_length=MAX_ID_CHARS)  # noqa: N815 - D-ID's name
    sdpMLineIndex: int | None = Field(None, ge=0, le=255)  # noqa: N815
    session_id: str | None = Field(None, max_length=MAX_ID_CHARS)


class Provider(BaseModel):
    type: str | None = Field(None, max_length=64)
    voice_id: str | None = Field(None, max_length=MAX_ID_CHARS)


class Script(BaseModel):
    type: Literal["text", "audio"]
    input: str | None = Field(None, max_length=MAX_TEXT_CHARS)
    audio_url: str | None = Field(None, max_length=MAX_URL_CHARS)
    ssml: bool | None = None
    provider: Provider | None = None
    should_queue_speaks: bool | None = None


class TalkRequest(BaseModel):
    script: Script
    config: dict[str, Any] | None = None
    session_id: str | None = Field(None, max_length=MAX_ID_CHARS)


class TalkStarted(BaseModel):
    status: Literal["started"] = "started"
    session_id: str
    duration: float = Field(description="Seconds of speech.")
    video_id: str = Field(description="The utterance: `videoId` of its stream/started event.")
    queue_position: int = Field(description="0: plays now (or next); n: after n others.")


class SessionIdBody(BaseModel):
    session_id: str | None = Field(None, max_length=MAX_ID_CHARS)


class StreamClosed(BaseModel):
    status: Literal["success"] = "success"
    session_id: str


class AgentAvatar(BaseModel):
    type: Literal["talk"] = "talk"
    voice: dict[str, Any] = Field(default_factory=lambda: {"language": "en"})


class AgentRuntime(BaseModel):
    """What D-ID's client SDK reads of an agent: every agent here is one of our avatars,
    with no knowledge, no starter messages and the TTS's voice."""

    id: str
    name: str
    owner_id: str = ""
    avatar: AgentAvatar = Field(default_factory=AgentAvatar)
    starter_message: list[str] = Field(default_factory=list)
    advanced_settings: dict[str, Any] = Field(default_factory=dict)
    knowledge: None = None


# TWIN's stream package (every call a JSON POST).


class TwinSetup(BaseModel):
    twinId: str | None = Field(None, max_length=MAX_ID_CHARS)  # noqa: N815
    responseResolution: str | int | None = Field(None)  # noqa: N815


class TwinSetupDone(BaseModel):
    id: str
    session_id: str
    offer: JsepOffer
    ice_servers: list[IceServer]


class TwinStreamRef(BaseModel):
    streamId: str = Field(max_length=MAX_ID_CHARS)  # noqa: N815
    sessionId: str | None = Field(None, max_length=MAX_ID_CHARS)  # noqa: N815


class TwinStart(TwinStreamRef):
    answer: Jsep


class TwinNetworkInfo(TwinStreamRef):
    candidate: str | None = Field(None, max_length=MAX_CANDIDATE_CHARS)
    sdpMid: str | None = Field(None, max_length=MAX_ID_CHARS)  # noqa: N815
    sdpMLineIndex: int | None = Field(None, ge=0, le=255)  # noqa: N815


class TwinCreated(BaseModel):
    status: Literal["created"] = "created"
    session_id: str


class TwinSpeak(TwinStreamRef):
    input: str = Field(max_length=MAX_TEXT_CHARS)
    twinId: str | None = Field(None, max_length=MAX_ID_CHARS)  # noqa: N815
    voiceId: str | None = Field(None, max_length=MAX_ID_CHARS)  # noqa: N815


class TwinStarted(BaseModel):
    status: Literal["started"] = "started"
    video_id: str
    duration: float
    session_id: str


class TwinLlmStarted(BaseModel):
    status: Literal["started"] = "started"
    session_id: str
    reply: str
    video_ids: list[str]
    interrupted: bool


class TwinOk(BaseModel):
    status: Literal["ok", "deleted"]
    session_id: str
