"""Server settings: every default and every environment variable name lives here."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.avatars.recipe import BBOX_SHIFT_LIMIT
from server.node_ids import valid_node_id

# aiortc's own default; used only when WEBRTC_STUN_URLS is not set at all.
DEFAULT_STUN_URLS = ("stun:stun.l.google.com:19302",)
# A decode worker's Python, numpy and FFmpeg alone take about 210 MiB of address space.
MIN_DECODE_MEMORY_BYTES = 256 * 1024 * 1024

# Below a minute a client could get credentials that expire before it has connected.
MIN_TURN_CREDENTIAL_TTL_SECONDS = 60.0
# Past this, a thread that wants the GIL can wait long enough to break real time.
MAX_SWITCH_INTERVAL_SECONDS = 0.1
MAX_KEPT_FREED_MEMORY_MIB = 2047  # mallopt takes an int
# A day: longer than sessions usually live (they are renewed when they come near it).
DEFAULT_TURN_CREDENTIAL_TTL_SECONDS = 24 * 3600.0


class SettingsError(ValueError):
    """An environment variable holds a value the server cannot use."""


def _env(name: str, **kwargs: Any) -> Any:
    """A dataclass field read from the environment variable `name`."""
    return field(metadata={"env": name}, **kwargs)


@dataclass(frozen=True)
class Settings:
    """Server configuration; `Settings.from_env()` reads the environment once at start-up."""

    # HTTP
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = _env("PUBLIC_URL", default="")
    """Base URL clients reach the server at (for `player_url`); empty: the request's own."""
    cors_allow_origins: tuple[str, ...] = _env("CORS_ALLOW_ORIGINS", default=())
    """Web origins whose pages may call the API from another origin (`*`: any); empty: none."""

    # Access (README, "Access")
    api_keys: tuple[str, ...] = _env("API_KEYS", default=(), repr=False)
    """Keys a control call must carry; with none here nor in API_KEYS_FILE the server is open."""
    api_keys_file: str = _env("API_KEYS_FILE", default="")
    """A file of more keys, one a line (`#` starts a comment)."""
    allow_open_access: bool = _env("ALLOW_OPEN_ACCESS", default=False)
    """Let `serve` listen beyond loopback without API keys."""
    allowed_hosts: tuple[str, ...] = _env("ALLOWED_HOSTS", default=())
    """Host names requests may carry besides loopback, the bound host and PUBLIC_URL's
    (`*.example.org`: its subdomains; `*`: any)."""
    player_frame_ancestors: str = _env("PLAYER_FRAME_ANCESTORS", default="")
    """CSP frame-ancestors of the player and demo pages; empty: 'self' and CORS_ALLOW_ORIGINS."""

    # Sync (DESIGN.md, "the media clock")
    audio_prebuffer_seconds: float = _env("WEBRTC_AUDIO_PREBUFFER_SECONDS", default=0.2)
    audio_max_lead_seconds: float = _env("WEBRTC_AUDIO_MAX_LEAD_SECONDS", default=0.08)
    audio_max_lag_seconds: float = _env("WEBRTC_AUDIO_MAX_LAG_SECONDS", default=0.12)

    # Streamed speech in (README, "Streaming speech in")
    stream_prebuffer_seconds: float = _env("STREAM_PREBUFFER_SECONDS", default=0.05)
    """Renderable audio a streamed utterance needs before it starts (at least one frame)."""
    stream_rebuffer_seconds: float = _env("STREAM_REBUFFER_SECONDS", default=0.2)
    """After streamed input ran dry: renderable audio needed before speech resumes."""
    stream_max_buffer_seconds: float = _env("STREAM_MAX_BUFFER_SECONDS", default=10.0)
    """Audio a client may send ahead of playback; beyond it the server stops reading."""
    stream_max_message_bytes: int = _env("STREAM_MAX_MESSAGE_BYTES", default=1024 * 1024)
    """Largest WebSocket message of streamed speech."""
    stream_idle_timeout_seconds: float = _env("STREAM_IDLE_TIMEOUT_SECONDS", default=10.0)
    """A streamed utterance that gets nothing for this long is ended with what arrived."""

    # Network
    stun_urls: tuple[str, ...] = _env("WEBRTC_STUN_URLS", default=DEFAULT_STUN_URLS)
    turn_urls: tuple[str, ...] = _env("WEBRTC_TURN_URLS", default=())
    turn_user: str = _env("WEBRTC_TURN_USER", default="")
    turn_pass: str = _env("WEBRTC_TURN_PASS", default="")
    turn_rest_urls: tuple[str, ...] = _env("WEBRTC_TURN_REST_URLS", default=())
    """TURN servers that share `turn_secret` (coturn's `use-auth-secret`): each session gets
    its own time-limited credentials for them (server/media/ice_servers.py)."""
    turn_secret: str = _env("WEBRTC_TURN_SECRET", default="", repr=False)
    turn_credential_ttl_seconds: float = _env(
        "WEBRTC_TURN_CREDENTIAL_TTL_SECONDS", default=DEFAULT_TURN_CREDENTIAL_TTL_SECONDS
    )
    """How long a session's minted TURN credentials are valid."""
    ice_host_addresses: tuple[str, ...] = _env("WEBRTC_ICE_HOST_ADDRESSES", default=())
    """Host addresses the server gathers ICE candidates on; empty: every interface."""

    # Sessions
    node_id: str = _env("NODE_ID", default="")
    """This node's name behind a reverse proxy (README, "Several nodes behind nginx"): the
    prefix of the session and render ids it mints; empty: a single node, bare ids."""
    max_sessions: int = _env("MAX_SESSIONS", default=0)
    """Most live sessions; 0: as many as can all speak at once at the default session
    parameters within the capacity budget (README, "Capacity")."""
    session_idle_ttl_seconds: float = _env("SESSION_IDLE_TTL_SECONDS", default=600.0)
    session_reconnect_grace_seconds: float = _env(
        "SESSION_RECONNECT_GRACE_SECONDS", default=20.0
    )
    """How long a session whose peer connection failed or closed waits for a new offer."""
    max_queued_utterances: int = _env("MAX_QUEUED_UTTERANCES", default=16)
    """Utterances a session keeps waiting behind the one playing (`mode=queue`)."""
    events_listener_backlog: int = _env("EVENTS_LISTENER_BACKLOG", default=256)
    """Events kept for a slow event-stream listener; beyond it its oldest are dropped."""
    events_heartbeat_seconds: float = _env("EVENTS_HEARTBEAT_SECONDS", default=15.0)
    """How often an idle event stream sends a comment, so proxies keep it open."""
    session_connect_timeout_seconds: float = _env("SESSION_CONNECT_TIMEOUT_SECONDS", default=60.0)
    """How long a new session waits for an offer that leads to a connection."""
    webrtc_connect_timeout_seconds: float = _env("WEBRTC_CONNECT_TIMEOUT_SECONDS", default=30.0)
    """How long an answered peer connection may take to connect before it counts as failed."""
    max_offer_bytes: int = _env("MAX_OFFER_BYTES", default=64 * 1024)

    # Capacity: admission from the host's measured budget (README, "Capacity")
    capacity_calibrate: bool = _env("CAPACITY_CALIBRATE", default=True)
    """Measure render, encode and audio costs at start-up; false: use the CAPACITY_*_MS ones."""
    capacity_render_ms_per_frame: float = _env("CAPACITY_RENDER_MS_PER_FRAME", default=2.0)
    """Engine time per frame at the worker's batch size (when not calibrated)."""
    capacity_encode_ms_per_frame: float = _env("CAPACITY_ENCODE_MS_PER_FRAME", default=6.0)
    """Converting and VP8-encoding one 512x512 frame (when not calibrated)."""
    capacity_loop_ms_per_frame: float = _env("CAPACITY_LOOP_MS_PER_FRAME", default=1.0)
    """The event loop's own work per video frame sent, its audio packets included (RTP,
    SRTP, the socket, pacing): added to the calibrated encode cost, which cannot see it
    (~1 ms on a 2-core box: scripts/bench_sessions.py, "loop ms per frame sent")."""
    capacity_audio_core_share: float = _env("CAPACITY_AUDIO_CORE_SHARE", default=0.02)
    """Share of a core one session's Opus stream takes (when not calibrated)."""
    capacity_idle_encode_share: float = _env("CAPACITY_IDLE_ENCODE_SHARE", default=0.3)
    """What an idle session's video costs, as a share of a speaking one's encoding. Idle
    viewers share one encoding of their avatar's loop (server/media/idle_share.py): what
    is left is sending its packets, ~1.4% of a core per idle session against ~5% for a
    speaking one's encode and send at 15 fps (scripts/bench_sessions.py)."""
    capacity_speaking_share: float = _env("CAPACITY_SPEAKING_SHARE", default=1.0)
    """Share of the admitted sessions a new session's admission expects to speak at once:
    1 admits only sessions that could all speak together; lower overbooks, and speech
    beyond the budget is then refused (503) when too many speak."""
    capacity_cores: float = _env("CAPACITY_CORES", default=0.0)
    """Cores the encoders share; 0: those this process may use (its CPU affinity, or its
    cgroup's CPU quota if lower)."""
    capacity_headroom: float = _env("CAPACITY_HEADROOM", default=0.75)
    """Share of the cores and of the render worker that admitted work may fill. The rest is
    for what calibration does not measure: the event loop's own work per packet (asyncio,
    ICE, DTLS), pacing, HTTP, decoding uploads; the overload benchmark on a 2-core box had
    13 sessions at 0.9 of a core short of real time."""
    capacity_render_fps: float = _env("CAPACITY_RENDER_FRAMES_PER_SECOND", default=0.0)
    """The render worker's budget in frames/s; 0: from its cost per frame and the headroom."""
    capacity_encode_fps: float = _env("CAPACITY_ENCODE_FRAMES_PER_SECOND", default=0.0)
    """The encoders' budget in 512x512 frames/s; 0: from the cores, the cost and the headroom."""
    capacity_max_wait_seconds: float = _env("CAPACITY_MAX_WAIT_SECONDS", default=30.0)
    """Longest a speech request sent with wait=true is held in line for capacity."""
    capacity_retry_after_seconds: float = _env("CAPACITY_RETRY_AFTER_SECONDS", default=10.0)
    """Retry-After of a refused session (capacity or limit), and of refused speech when
    none is about to end."""

    # Threads
    thread_switch_interval_seconds: float = _env("THREAD_SWITCH_INTERVAL_SECONDS", default=0.0005)
    """Python's switch interval (`sys.setswitchinterval`; Python's default is 0.005). The
    encoders' threads give up the GIL for each Opus or VP8 call and wait this long to get it
    back from a busy thread (the render worker, the loop): at 5 ms, a 0.1 ms Opus frame
    took 7 ms, 12 sessions' audio fell behind and video was held back to it."""

    # Memory
    keep_freed_memory_mib: int = _env("KEEP_FREED_MEMORY_MIB", default=256)
    """Freed memory the process keeps for reuse, at most (glibc's `M_TRIM_THRESHOLD`), and
    allocations up to 32 MiB served from it rather than fresh from the kernel: glibc maps
    anything over 128 KiB (a 512×512 frame is 768 KiB) anew and unmaps it when freed, so
    every frame, converted picture and decoded upload paid a page fault per 4 KiB each time
    (the demo engine rendered a frame in 1.3 ms, 0.7 with this). 0: glibc's defaults."""

    # Clients (rate limits per client address; 0 turns one off)
    create_rate_per_minute: float = _env("RATE_LIMIT_CREATE_PER_MINUTE", default=60.0)
    create_burst: int = _env("RATE_LIMIT_CREATE_BURST", default=30)
    upload_rate_per_minute: float = _env("RATE_LIMIT_UPLOAD_PER_MINUTE", default=120.0)
    upload_burst: int = _env("RATE_LIMIT_UPLOAD_BURST", default=30)
    forwarded_allow_ips: tuple[str, ...] = _env("FORWARDED_ALLOW_IPS", default=("127.0.0.1",))
    """Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (uvicorn's setting)."""

    # Slow clients and shutdown (the HTTP server itself)
    http_header_timeout_seconds: float = _env("HTTP_HEADER_TIMEOUT_SECONDS", default=10.0)
    """A request's line and headers must arrive within this, or the connection is closed."""
    http_body_timeout_seconds: float = _env("HTTP_BODY_TIMEOUT_SECONDS", default=20.0)
    http_body_min_rate: int = _env("HTTP_BODY_MIN_BYTES_PER_SECOND", default=4096)
    """A body's deadline is HTTP_BODY_TIMEOUT_SECONDS plus one second per this many bytes
    received (Apache mod_reqtimeout's MinRate): a slower body is cut with a 408."""
    http_max_connections: int = _env("HTTP_MAX_CONNECTIONS", default=1000)
    """Open connections at once; past it requests get 503 (uvicorn's limit_concurrency)."""
    shutdown_timeout_seconds: float = _env("SHUTDOWN_TIMEOUT_SECONDS", default=10.0)
    """After SIGTERM, requests in flight get this long before they are cancelled."""

    # Uploads
    max_upload_bytes: int = _env("MAX_UPLOAD_BYTES", default=25 * 1024 * 1024)
    max_audio_seconds: float = _env("MAX_AUDIO_SECONDS", default=120.0)

    # Decoding untrusted media in worker processes (README, "Isolation")
    decode_workers: int = _env("DECODE_WORKERS", default=4)
    """Worker processes that decode audio uploads. More than this box's two cores: a
    decode spends most of its time passing the file and its samples through pipes, and
    with 12 uploads at once, in three runs taken turn about, four workers gave first
    speech p95 497-571 ms against 587-730 with two."""
    decode_max_in_flight: int = _env("DECODE_MAX_IN_FLIGHT", default=24)
    """Audio decodes running or waiting for a worker (and streamed MP3 or Ogg, each in a
    worker of its own while it lasts), server-wide; beyond: 503. Room for every session of
    a full 2-core box to upload at the same instant."""
    decode_max_memory_bytes: int = _env("DECODE_MAX_MEMORY_BYTES", default=1024 * 1024 * 1024)
    """Address space of an audio decode worker (RLIMIT_AS), its libraries (~210 MiB) included."""
    decode_cpu_seconds: float = _env("DECODE_CPU_SECONDS", default=10.0)
    decode_timeout_seconds: float = _env("DECODE_TIMEOUT_SECONDS", default=20.0)
    """Wall time of one audio decode; for an avatar video, the longest wait for a frame."""
    decode_max_sample_rate: int = _env("DECODE_MAX_SAMPLE_RATE", default=192_000)
    decode_max_channels: int = _env("DECODE_MAX_CHANNELS", default=32)
    avatar_decode_max_memory_bytes: int = _env(
        "AVATAR_DECODE_MAX_MEMORY_BYTES", default=4 * 1024 * 1024 * 1024
    )
    """Address space of an avatar video decode worker (RLIMIT_AS)."""
    avatar_decode_cpu_seconds: float = _env("AVATAR_DECODE_CPU_SECONDS", default=300.0)
    """CPU time of one pass over an avatar video (preparation reads it twice)."""

    # Lip sync
    lipsync_engine: str = _env("LIPSYNC_ENGINE", default="auto")
    lipsync_device: str = _env("LIPSYNC_DEVICE", default="")
    """Torch device for the model engine; empty: cuda when available, else cpu."""
    lipsync_max_batch: int = _env("LIPSYNC_MAX_BATCH", default=0)
    """Most frames the render worker puts in one batch; 0: the engine's own default."""
    lipsync_render_ahead_seconds: float = _env("LIPSYNC_RENDER_AHEAD_SECONDS", default=-1.0)
    """How long before a frame is wanted the render worker may start it; negative: the
    engine's own (demo: 0.5 s; musetalk: no limit)."""
    models_dir: Path = _env("MODELS_DIR", default=Path("models"))
    """MuseTalk's weights, in MuseTalk's own layout (models/README.md)."""
    musetalk_version: str = _env("MUSETALK_VERSION", default="auto")
    """MuseTalk weights to run: 1.5, 1.0, or auto (1.5 when its files are complete, else 1.0)."""
    musetalk_bbox_shift: int = _env("MUSETALK_BBOX_SHIFT", default=0)
    """MuseTalk 1.0's bbox_shift for avatars prepared for 1.0 that do not give their own:
    pixels the face box's vertical centre moves down (negative: up); 1.5 always uses 0."""
    musetalk_audio_window: str = _env("MUSETALK_AUDIO_WINDOW", default="centred")
    """Which audio each video frame sees: `centred` on the frame at every fps (MuseTalk's
    training window; the same as MuseTalk's at 25 fps), or `musetalk`, MuseTalk's realtime
    rule exactly, which at other rates sees audio from before the frame (at 10 fps: the
    200 ms before it, so the lips lag)."""
    avatars_dir: Path = _env("AVATARS_DIR", default=Path("avatars"))
    """Prepared avatars; engines cache what they compute for an avatar under its `.cache/`."""

    # Renders: speech as an MP4 file (README, "Renders")
    renders_dir: Path = _env("RENDERS_DIR", default=Path("renders"))
    """Where rendered MP4 files are written; what a previous run left there is removed."""
    renders_max_jobs: int = _env("RENDERS_MAX_JOBS", default=32)
    """Renders kept (queued, running or finished); past it the oldest finished one goes,
    and with none finished a new one is refused (429)."""
    renders_max_running: int = _env("RENDERS_MAX_RUNNING", default=1)
    """Renders rendering at once; the others wait, queued."""
    renders_ttl_seconds: float = _env("RENDERS_TTL_SECONDS", default=3600.0)
    """How long a finished render (and its file) is kept."""

    # Avatar preparation (README, "Avatars")
    avatar_max_upload_bytes: int = _env("AVATAR_MAX_UPLOAD_BYTES", default=200 * 1024 * 1024)
    avatar_min_video_seconds: float = _env("AVATAR_MIN_VIDEO_SECONDS", default=5.0)
    """Shorter videos are refused: their idle loop repeats visibly. 0 accepts any length."""
    avatar_max_video_seconds: float = _env("AVATAR_MAX_VIDEO_SECONDS", default=60.0)
    avatar_max_frame_side: int = _env("AVATAR_MAX_FRAME_SIDE", default=1920)
    """Longest side of a video frame, in pixels (every frame is kept in memory)."""
    avatar_max_faceless_share: float = _env("AVATAR_MAX_FACELESS_SHARE", default=0.1)
    """Share of frames allowed without a detected face; they borrow a neighbour's box."""

    # Text to speech (README, "Text and chat")
    tts_engine: str = _env("TTS_ENGINE", default="espeak")
    """espeak (espeak-ng, offline), piper (voices in TTS_VOICES_DIR) or openai (a service)."""
    tts_voice: str = _env("TTS_VOICE", default="")
    """The voice when a request names none; empty: the backend's (en-us, the first Piper
    voice, alloy)."""
    tts_voices_dir: Path = _env("TTS_VOICES_DIR", default=Path(""))
    """Piper voice files (`<voice>.onnx` + `.onnx.json`); empty: MODELS_DIR/tts."""
    tts_openai_url: str = _env("TTS_OPENAI_URL", default="")
    """Base URL of an OpenAI-compatible speech service (`…/v1`; `/audio/speech` is added)."""
    tts_openai_key: str = _env("TTS_OPENAI_KEY", default="")
    tts_openai_model: str = _env("TTS_OPENAI_MODEL", default="tts-1")
    tts_openai_format: str = _env("TTS_OPENAI_FORMAT", default="pcm")
    """pcm (24 kHz s16le), mp3 or opus (spoken as they arrive), or wav (read whole)."""
    tts_max_chars: int = _env("TTS_MAX_CHARS", default=1000)
    """Longest text `/say` takes (and longest sentence of a chat reply spoken at once)."""
    tts_timeout_seconds: float = _env("TTS_TIMEOUT_SECONDS", default=30.0)

    # Chat (README, "Text and chat")
    llm_url: str = _env("LLM_URL", default="")
    """Base URL of an OpenAI-compatible chat completions service (`…/v1`); empty: no chat."""
    llm_key: str = _env("LLM_KEY", default="")
    llm_model: str = _env("LLM_MODEL", default="")
    llm_system_prompt: str = _env(
        "LLM_SYSTEM_PROMPT",
        default=(
            "You are a friendly person talking with the user face to face. Answer briefly, "
            "in plain spoken sentences, without lists, markup or emoji."
        ),
    )
    llm_timeout_seconds: float = _env("LLM_TIMEOUT_SECONDS", default=60.0)
    """Longest wait for the LLM's first answer, and between two pieces of its stream."""
    llm_max_reply_chars: int = _env("LLM_MAX_REPLY_CHARS", default=4000)
    chat_max_message_chars: int = _env("CHAT_MAX_MESSAGE_CHARS", default=2000)
    chat_history_messages: int = _env("CHAT_HISTORY_MESSAGES", default=20)
    """Messages (user and assistant) a session keeps and sends with the next turn."""
    chat_history_chars: int = _env("CHAT_HISTORY_CHARS", default=16000)
    """Most characters of history sent; older messages go first."""

    # HeyGen Streaming API v1 (README, "Coming from HeyGen")
    heygen_default_avatar: str = _env("HEYGEN_DEFAULT_AVATAR", default="demo")
    """The avatar of a `streaming.new` that names none (or `default`)."""
    heygen_avatar_fallback: str = _env("HEYGEN_AVATAR_FALLBACK", default="")
    """The avatar used for an `avatar_id`/`avatar_name` this server does not have (HeyGen's
    names mean nothing here); empty: such a name is refused (404, code 10012)."""
    heygen_token_ttl_seconds: float = _env("HEYGEN_TOKEN_TTL_SECONDS", default=3600.0)
    """How long a `streaming.create_token` token stands in for the API key."""
    # Vendor surfaces (README, "Coming from D-ID", "Coming from TWIN")
    audio_url_allowed_hosts: tuple[str, ...] = _env("AUDIO_URL_ALLOWED_HOSTS", default=())
    """Hosts a D-ID `audio_url` may name (`*.example.org`: its subdomains); empty: none, so
    `audio_url` is refused. Private, loopback and link-local addresses are refused unless
    the host is named here exactly."""
    audio_url_timeout_seconds: float = _env("AUDIO_URL_TIMEOUT_SECONDS", default=10.0)
    """Longest fetch of an `audio_url` (connecting, redirects and the whole body)."""
    vendor_default_avatar: str = _env("VENDOR_DEFAULT_AVATAR", default="demo")
    """The avatar of a D-ID stream whose `source_url`/`presenter_id` names none of ours."""

    log_level: str = _env("LOG_LEVEL", default="info")
    log_format: str = _env("LOG_FORMAT", default="text")
    """`text` lines, or `json`: one object per line, with `session_id` as a field."""

    def __post_init__(self) -> None:
        problems = []
        if self.lipsync_engine not in ("auto", "demo", "musetalk"):
            problems.append("LIPSYNC_ENGINE must be one of auto, demo, musetalk")
        if self.musetalk_version not in ("auto", "1.5", "1.0"):
            problems.append("MUSETALK_VERSION must be one of auto, 1.5, 1.0")
        if not valid_node_id(self.node_id):
            problems.append("NODE_ID must be 1 to 16 lower-case letters or digits (or empty)")
        if self.log_format not in ("text", "json"):
            problems.append("LOG_FORMAT must be one of text, json")
        if self.musetalk_audio_window not in ("centred", "musetalk"):
            problems.append("MUSETALK_AUDIO_WINDOW must be one of centred, musetalk")
        for name in (
            "audio_prebuffer_seconds",
            "audio_max_lead_seconds",
            "audio_max_lag_seconds",
            "stream_prebuffer_seconds",
            "stream_rebuffer_seconds",
        ):
            if not 0 <= getattr(self, name) <= 5:
                problems.append(f"{_env_name(name)} must be between 0 and 5 seconds")
        if self.max_sessions < 0:
            problems.append("MAX_SESSIONS must not be negative (0: from capacity)")
        for name in (
            "capacity_render_ms_per_frame", "capacity_encode_ms_per_frame",
            "capacity_max_wait_seconds", "capacity_retry_after_seconds",
        ):
            if getattr(self, name) <= 0:
                problems.append(f"{_env_name(name)} must be positive")
        for name in (
            "capacity_audio_core_share", "capacity_idle_encode_share", "capacity_cores",
            "capacity_loop_ms_per_frame",
            "capacity_render_fps", "capacity_encode_fps",
        ):
            if getattr(self, name) < 0:
                problems.append(f"{_env_name(name)} must not be negative")
        if not 0 <= self.capacity_speaking_share <= 1:
            problems.append("CAPACITY_SPEAKING_SHARE must be between 0 and 1")
        if not 0 < self.capacity_headroom <= 1:
            problems.append("CAPACITY_HEADROOM must be above 0 and at most 1")
        if not 0 <= self.keep_freed_memory_mib <= MAX_KEPT_FREED_MEMORY_MIB:
            problems.append(f"KEEP_FREED_MEMORY_MIB must be between 0 and {MAX_KEPT_FREED_MEMORY_MIB}")
        if not 0 < self.thread_switch_interval_seconds <= MAX_SWITCH_INTERVAL_SECONDS:
            problems.append(
                f"THREAD_SWITCH_INTERVAL_SECONDS must be above 0 and at most {MAX_SWITCH_INTERVAL_SECONDS:g}"
            )
        for name in (
            "max_upload_bytes", "avatar_max_upload_bytes", "avatar_max_frame_side",
            "events_listener_backlog",
            "decode_workers", "decode_max_in_flight", "decode_max_sample_rate",
            "decode_max_channels", "renders_max_jobs", "renders_max_running",
            "stream_max_message_bytes",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{_env_name(name)} must be at least 1")
        for name in (
            "session_idle_ttl_seconds", "max_audio_seconds", "avatar_max_video_seconds",
            "events_heartbeat_seconds", "renders_ttl_seconds",
            "stream_max_buffer_seconds", "stream_idle_timeout_seconds",
            "decode_cpu_seconds", "decode_timeout_seconds", "avatar_decode_cpu_seconds",
        ):
            if getattr(self, name) <= 0:
                problems.append(f"{_env_name(name)} must be positive")
        if not 0 <= self.avatar_min_video_seconds <= self.avatar_max_video_seconds:
            problems.append(
                "AVATAR_MIN_VIDEO_SECONDS must be between 0 and AVATAR_MAX_VIDEO_SECONDS"
            )
        if not 0 <= self.avatar_max_faceless_share < 1:
            problems.append("AVATAR_MAX_FACELESS_SHARE must be at least 0 and below 1")
        if abs(self.musetalk_bbox_shift) > BBOX_SHIFT_LIMIT:
            problems.append(f"MUSETALK_BBOX_SHIFT must be between -{BBOX_SHIFT_LIMIT} and {BBOX_SHIFT_LIMIT}")
        for name in (
            "session_connect_timeout_seconds", "webrtc_connect_timeout_seconds",
            "http_header_timeout_seconds", "http_body_timeout_seconds",
        ):
            if getattr(self, name) <= 0:
                problems.append(f"{_env_name(name)} must be positive")
        for name in ("max_offer_bytes", "http_max_connections", "http_body_min_rate"):
            if getattr(self, name) < 1:
                problems.append(f"{_env_name(name)} must be at least 1")
        for name in (
            "create_rate_per_minute", "create_burst", "upload_rate_per_minute", "upload_burst",
            "shutdown_timeout_seconds",
        ):
            if getattr(self, name) < 0:
                problems.append(f"{_env_name(name)} must not be negative")
        if self.session_reconnect_grace_seconds < 0:
            problems.append("SESSION_RECONNECT_GRACE_SECONDS must not be negative")
        if self.max_queued_utterances < 0:
            problems.append("MAX_QUEUED_UTTERANCES must not be negative")
        if self.turn_rest_urls and not self.turn_secret:
            problems.append("WEBRTC_TURN_REST_URLS needs WEBRTC_TURN_SECRET, the secret they share")
        if self.turn_secret and not self.turn_rest_urls:
            problems.append("WEBRTC_TURN_SECRET needs WEBRTC_TURN_REST_URLS, the servers sharing it")
        if self.turn_credential_ttl_seconds < MIN_TURN_CREDENTIAL_TTL_SECONDS:
            problems.append(
                "WEBRTC_TURN_CREDENTIAL_TTL_SECONDS must be at least "
                f"{MIN_TURN_CREDENTIAL_TTL_SECONDS:g} seconds"
            )
        for name in ("decode_max_memory_bytes", "avatar_decode_max_memory_bytes"):
            if getattr(self, name) < MIN_DECODE_MEMORY_BYTES:
                problems.append(f"{_env_name(name)} must be at least {MIN_DECODE_MEMORY_BYTES}")
        if self.lipsync_max_batch < 0:
            problems.append("LIPSYNC_MAX_BATCH must not be negative")
        if self.tts_engine not in ("espeak", "piper", "openai"):
            problems.append("TTS_ENGINE must be one of espeak, piper, openai")
        if self.tts_openai_format not in ("pcm", "mp3", "opus", "wav"):
            problems.append("TTS_OPENAI_FORMAT must be pcm, mp3, opus or wav")
        for name in (
            "tts_max_chars", "llm_max_reply_chars", "chat_max_message_chars",
            "chat_history_messages", "chat_history_chars",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{_env_name(name)} must be at least 1")
        for name in ("tts_timeout_seconds", "llm_timeout_seconds"):
            if getattr(self, name) <= 0:
                problems.append(f"{_env_name(name)} must be positive")
        if problems:
            raise SettingsError("; ".join(problems))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from `environ` (default: `os.environ`); `overrides` win over both."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata.get("env")
            if name is None or name not in environ:
                continue
            values[f.name] = _parse(name, environ[name], f.default)
        values.update(overrides)
        return cls(**values)

    @property
    def tts_voices_path(self) -> Path:
        """Where Piper voices are looked for."""
        return self.tts_voices_dir if str(self.tts_voices_dir) not in ("", ".") else self.models_dir / "tts"

    def ice_servers(self) -> list[dict[str, Any]]:
        """The configured STUN and static TURN servers, in the form browsers'
        RTCConfiguration takes (a session adds its own TURN credentials to them:
        server/media/ice_servers.py)."""
        servers: list[dict[str, Any]] = []
        if self.stun_urls:
            servers.append({"urls": list(self.stun_urls)})
        if self.turn_urls:
            servers.append(
                {
                    "urls": list(self.turn_urls),
                    "username": self.turn_user,
                    "credential": self.turn_pass,
                }
            )
        return servers


def _env_name(field_name: str) -> str:
    return next(f.metadata["env"] for f in dataclasses.fields(Settings) if f.name == field_name)


def _parse(name: str, raw: str, default: Any) -> Any:
    """Parse an environment value to the type of the field's default."""
    text = raw.strip()
    try:
        if isinstance(default, bool):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(text)
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, tuple):
            return tuple(part.strip() for part in text.split(",") if part.strip())
        if isinstance(default, Path):
            return Path(text)
        return text
    except ValueError:
        kind = type(default).__name__
        raise SettingsError(f"{name}={raw!r} is not a valid {kind}") from None
