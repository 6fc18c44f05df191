"""Every request and response shape of the HTTP API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

# Bounds of the session parameters (query parameters of `create`).
FPS_RANGE = (1, 60)
BATCH_SIZE_RANGE = (1, 64)
CHUNK_DURATION_RANGE = (0.2, 10.0)
ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"


class ErrorResponse(BaseModel):
    detail: str


class BusyResponse(ErrorResponse):
    retry_after_seconds: float = Field(description="When the avatar should be free again.")


class RateLimitedResponse(ErrorResponse):
    retry_after_seconds: float = Field(description="When this client may call again.")


class IceServer(BaseModel):
    """An RTCIceServer; the credentials are left out (not null) when there are none."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class SessionParameters(BaseModel):
    """A session's effective parameters."""

    avatar_id: str
    user_id: str | None
    fps: int
    playback_fps: int
    batch_size: int
    chunk_duration: float


class SessionCreated(SessionParameters):
    session_id: str
    player_url: str
    ice_servers: list[IceServer]
    engine: str
    idle_ttl_seconds: float


class SessionDescription(BaseModel):
    sdp: str = Field(min_length=1)
    type: Literal["offer", "answer"]


class IceCandidate(BaseModel):
    """An RTCIceCandidateInit; an empty or absent `candidate` ends the candidates."""

    candidate: str | None = None
    sdpMid: str | None = None  # noqa: N815 - the WebRTC field name
    sdpMLineIndex: int | None = Field(default=None, ge=0)  # noqa: N815
    usernameFragment: str | None = None  # noqa: N815


class AudioSource(BaseModel):
    format: str
    codec: str
    sample_rate: int
    channels: int


class StreamAccepted(BaseModel):
    session_id: str
    utterance_id: str
    duration_seconds: float
    frame_count: int
    chunk_count: int
    source: AudioSource


class UtteranceInfo(BaseModel):
    utterance_id: str
    state: str
    duration_seconds: float
    position_seconds: float
    frames_rendered: int
    frame_count: int


class SyncInfo(BaseModel):
    utterances_started: int
    utterances_finished: int
    utterances_cancelled: int
    audio_holds: int
    audio_hold_seconds: float
    video_frames_late: int
    video_frames_held: int
    last_start_delay: float | None


class MediaInfo(BaseModel):
    audio_frames_sent: int
    video_frames_sent: int
    video_frames_skipped: int
    video_send_latency_ms: float | None


class SessionInfo(SessionParameters):
    session_id: str
    ice_servers: list[IceServer]
    state: Literal["waiting", "connecting", "idle", "speaking", "reconnecting", "closed"]
    connection_state: str
    connections: int
    created_at: float
    expires_in_seconds: float
    utterance: UtteranceInfo | None
    sync: SyncInfo
    media: MediaInfo


class SessionEnded(BaseModel):
    session_id: str
    state: Literal["closed"] = "closed"


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    engine: str
    engine_reason: str
    engine_details: dict[str, str | int | float]
    """What the engine runs on, e.g. MuseTalk's version, device and dtype."""
    sessions: int
    max_sessions: int
    avatars: list[str]
    worker: dict[str, float | int]


class PreparedAvatarInfo(BaseModel):
    """What is stored for a prepared avatar (avatar.json, in short)."""

    frame_count: int
    fps: float
    width: int
    height: int
    duration_seconds: float
    source_name: str | None
    source_sha256: str
    prepared_at: str
    landmarks: str = Field(description="dwpose, mediapipe-face-mesh or bbox.")
    face_parsing: str = Field(description="bisenet:<weights hash>, or feathered without the weights.")
    warnings: list[str]
    latents: list[str] = Field(description="engine/version of the latents engines stored so far.")


class PreparationJobInfo(BaseModel):
    state: Literal["queued", "running", "done", "failed"]
    progress: float = Field(ge=0, le=1)
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    error_status: int | None = Field(description="The HTTP status of the failure, when it failed.")
    error: str | None
    reused: bool | None = Field(description="True when the avatar was already prepared from this video.")


class AvatarInfo(BaseModel):
    avatar_id: str
    state: Literal["queued", "running", "ready", "failed"]
    progress: float = Field(ge=0, le=1)
    built_in: bool
    sessions: int = Field(description="Sessions using the avatar now.")
    error: str | None = Field(default=None, description="Why the latest preparation failed.")
    job: PreparationJobInfo | None = Field(description="The latest preparation started over HTTP.")
    prepared: PreparedAvatarInfo | None = Field(
        description="The stored avatar; also after a failed new preparation, which left it as it was."
    )


class AvatarList(BaseModel):
    avatars: list[AvatarInfo]


class AvatarDeleted(BaseModel):
    avatar_id: str
    state: Literal["deleted"] = "deleted"
