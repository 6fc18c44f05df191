"""Every request and response shape of the HTTP API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

# Bounds of the session parameters (query parameters of `create`).
FPS_RANGE = (1, 60)
BATCH_SIZE_RANGE = (1, 64)
CHUNK_DURATION_RANGE = (0.2, 10.0)
ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"


def _left_out_when_none(schema: dict[str, Any]) -> None:
    """The JSON schema of an optional field that answers leave out, never send as null."""
    variants = [variant for variant in schema.pop("anyOf", []) if variant.get("type") != "null"]
    if variants:
        schema.update(variants[0])
    schema.pop("default", None)


class ErrorResponse(BaseModel):
    """Every refusal: a sentence that says what was wrong and what to do."""

    detail: str


class FieldError(BaseModel):
    """One request parameter or field that failed validation."""

    loc: list[str | int] = Field(description="Where: e.g. ['fps'] or ['body', 'sdp'].")
    msg: str
    type: str


class InvalidRequestResponse(ErrorResponse):
    """422: `detail` names every invalid parameter; `errors` lists them when the request's
    parameters or JSON body failed validation (a missing form field has only `detail`)."""

    errors: list[FieldError] | None = Field(default=None, json_schema_extra=_left_out_when_none)


class AvatarNotFoundResponse(ErrorResponse):
    available_avatars: list[str] = Field(description="The avatars that can be used.")


class BusyResponse(ErrorResponse):
    """409: `retry_after_seconds` (and a Retry-After header) while the avatar is speaking;
    left out when no client is connected yet."""

    retry_after_seconds: float | None = Field(
        default=None,
        description="When the avatar should be free again.",
        json_schema_extra=_left_out_when_none,
    )


class CapacityRefusalResponse(BusyResponse):
    """503 of a server at its capacity or session limit (README, "Capacity")."""

    reason: str | None = Field(
        default=None,
        description="session_limit, session_capacity, speech_capacity, wait_timeout or "
        "render_capacity; left out for other 503s (shutting down, decode slots).",
        json_schema_extra=_left_out_when_none,
    )


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
    player_url: str = Field(description="The hosted player; it carries `session_token`.")
    session_token: str = Field(
        description="Lets this session's player and signalling calls in (README, \"Access\")."
    )
    ice_servers: list[IceServer]
    engine: str
    idle_ttl_seconds: float


class SessionDescription(BaseModel):
    sdp: str = Field(min_length=1)
    type: Literal["offer", "answer"]


class WhepEnded(BaseModel):
    """A WHEP resource ended; its session stays."""

    session_id: str
    resource_id: str
    ended: bool = True


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


class CutUtterance(BaseModel):
    """An utterance stopped before its end."""

    utterance_id: str
    played_seconds: float = Field(description="Seconds of its audio that were sent.")
    duration_seconds: float


class StreamAccepted(BaseModel):
    session_id: str
    utterance_id: str
    duration_seconds: float
    frame_count: int
    chunk_count: int
    source: AudioSource
    mode: Literal["reject", "queue", "interrupt"]
    queue_position: int = Field(
        description="0: it plays next, nothing before it; n: n utterances play before it."
    )
    interrupted: CutUtterance | None = Field(
        default=None, description="The utterance `mode=interrupt` cut, if one was playing."
    )
    dropped_utterance_ids: list[str] = Field(
        default_factory=list, description="Queued utterances `mode=interrupt` dropped."
    )


class StreamedSpeechResult(BaseModel):
    session_id: str
    utterance_id: str
    duration_seconds: float = Field(description="Seconds of audio received.")
    mode: Literal["reject", "queue", "interrupt"]
    queue_position: int = Field(description="Where it went when the upload began (0: next).")
    state: str = Field(description="pending, playing, finished or cancelled when the body ended.")
    format: str
    sample_rate: int | None = None
    channels: int | None = None


class InterruptResult(BaseModel):
    session_id: str
    interrupted: CutUtterance | None = Field(description="What was cut; null when nothing played.")
    dropped_utterance_ids: list[str] = Field(description="Queued utterances dropped, never played.")
    queued: int = Field(description="Utterances still queued (with `keep_queue`), next to play.")


class QueuedUtterance(BaseModel):
    utterance_id: str
    position: int
    duration_seconds: float


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
    input_underruns: int = Field(
        default=0, description="Times streamed speech ran out of input (the avatar held, mouth closed, silent)."
    )
    input_wait_seconds: float = Field(
        default=0.0, description="Seconds of silence sent while streamed speech waited for input."
    )


class MediaInfo(BaseModel):
    audio_frames_sent: int
    video_frames_sent: int
    video_frames_skipped: int
    video_send_latency_ms: float | None
    video_frames_shared: int = Field(
        default=0, description="Video frames sent from the avatar's shared idle loop, not encoded for this session."
    )
    video_frames_repeated: int = Field(
        default=0,
        description="Video frames that showed the picture before again (playback_fps above fps), "
        "sent as a VP8 repeat frame rather than encoded again.",
    )
    video_keyframe_requests: int = Field(default=0, description="Keyframe requests (PLI/FIR) from the receiver.")
    video_grid_moves: int = Field(
        default=0,
        description="Times the video's frame times moved so that speech's first frame left with its first audio.",
    )


class SessionInfo(SessionParameters):
    session_id: str
    ice_servers: list[IceServer]
    state: Literal["waiting", "connecting", "idle", "speaking", "reconnecting", "closed"]
    connection_state: str
    connections: int
    created_at: float
    expires_in_seconds: float
    utterance: UtteranceInfo | None
    queue: list[QueuedUtterance] = Field(description="What plays after `utterance`, in order.")
    sync: SyncInfo
    media: MediaInfo


class SessionEnded(BaseModel):
    session_id: str
    state: Literal["closed"] = "closed"


class Alive(BaseModel):
    """What `/health` tells a caller without an API key (on a server that has keys)."""

    status: Literal["ok"] = "ok"


class CapacityInfo(BaseModel):
    """The capacity budget and the load on it (README, "Capacity")."""

    source: Literal["calibrated", "configured"] = Field(
        description="Costs measured at start-up, or taken from the CAPACITY_* settings."
    )
    cores: float
    headroom: float
    render_ms_per_frame: float
    encode_ms_per_frame: float = Field(description="Convert + VP8-encode one frame of `reference_size`.")
    reference_size: list[int] = Field(description="[width, height] the encode cost is for.")
    audio_core_share: float = Field(description="Share of a core one session's Opus stream takes.")
    idle_encode_share: float
    render_uses_cpu: bool
    render_budget_fps: float
    encode_budget_fps: float
    render_load_fps: float
    encode_load_fps: float
    sessions_admitted: int
    sessions_idle: int
    sessions_speaking: int
    speech_waiting: int = Field(description="Speech requests waiting in line (wait=true).")
    renders_running: int
    refusals: dict[str, int] = Field(description="503 refusals so far, by reason.")


class Health(Alive):
    engine: str
    engine_reason: str
    engine_details: dict[str, str | int | float]
    """What the engine runs on, e.g. MuseTalk's version, device and dtype."""
    sessions: int
    max_sessions: int
    avatars: list[str]
    worker: dict[str, float | int]
    capacity: CapacityInfo
    tts_unavailable_reason: str | None = Field(
        default=None, description="Why text cannot be spoken (`/say`); null when it can."
    )
    llm_unavailable_reason: str | None = Field(
        default=None, description="Why `/chat` cannot answer (no LLM configured); null when it can."
    )


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
    musetalk_version: str = Field(description="The MuseTalk version whose recipe it was prepared with.")
    bbox_shift: int = Field(description="MuseTalk 1.0's bbox_shift it was prepared with (0 for 1.5).")
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


class Ready(BaseModel):
    status: Literal["ready"] = "ready"
    engine: str
    sessions: int
    max_sessions: int


VOICE_MAX_CHARS = 100


class SayRequest(BaseModel):
    text: str = Field(description="Plain text or SSML; markup is removed, never spoken.")
    voice: str | None = Field(
        default=None, max_length=VOICE_MAX_CHARS, description="A voice of the TTS backend; default TTS_VOICE."
    )
    mode: Literal["reject", "queue", "interrupt"] = "reject"
    keep_queue: bool = Field(default=False, description="With mode=interrupt: keep the queue.")
    wait: bool = Field(
        default=False,
        description="When the server has not the capacity for the speech now: wait in line "
        "(up to CAPACITY_MAX_WAIT_SECONDS, `capacity_wait` events) instead of a 503.",
    )


class SayAccepted(BaseModel):
    session_id: str
    utterance_id: str
    duration_seconds: float
    frame_count: int
    chunk_count: int
    text: str = Field(description="What was spoken: the text with its markup removed.")
    voice: str
    tts_engine: str
    mode: Literal["reject", "queue", "interrupt"]
    queue_position: int = Field(
        description="0: it plays next, nothing before it; n: n utterances play before it."
    )
    interrupted: CutUtterance | None = None
    dropped_utterance_ids: list[str] = Field(default_factory=list)


class ChatRequest(BaseModel):
    message: str = Field(min_length=1, description="What the user says.")
    system_prompt: str | None = Field(
        default=None,
        description="Replaces the session's system prompt (LLM_SYSTEM_PROMPT) from this turn on.",
    )
    voice: str | None = Field(default=None, max_length=VOICE_MAX_CHARS)
    mode: Literal["reject", "queue", "interrupt"] = Field(
        default="queue",
        description="What the first sentence does while the avatar speaks; `interrupt` also "
        "stops a chat turn still running.",
    )


class ChatSentence(BaseModel):
    text: str
    utterance_id: str
    duration_seconds: float
    queue_position: int


class ChatReply(BaseModel):
    session_id: str
    reply: str = Field(description="The LLM's whole reply (what arrived, when interrupted).")
    sentences: list[ChatSentence] = Field(description="Each sentence spoken, as its utterance.")
    interrupted: bool = Field(description="One of its utterances was cut or dropped: the turn stopped.")
    truncated: bool = Field(description="The reply was cut at LLM_MAX_REPLY_CHARS.")
    history_messages: int = Field(description="Messages the session's conversation keeps now.")
