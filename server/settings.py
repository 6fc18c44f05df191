"""Server settings: every default and every environment variable name lives here."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# aiortc's own default; used only when WEBRTC_STUN_URLS is not set at all.
DEFAULT_STUN_URLS = ("stun:stun.l.google.com:19302",)


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
    cors_allow_origins: tuple[str, ...] = _env("CORS_ALLOW_ORIGINS", default=())
    """Web origins whose pages may call the API from another origin (`*`: any); empty: none."""
    """Base URL clients reach the server at (for `player_url`); empty: the request's own."""

    # Sync (DESIGN.md, "the media clock")
    audio_prebuffer_seconds: float = _env("WEBRTC_AUDIO_PREBUFFER_SECONDS", default=0.2)
    audio_max_lead_seconds: float = _env("WEBRTC_AUDIO_MAX_LEAD_SECONDS", default=0.08)
    audio_max_lag_seconds: float = _env("WEBRTC_AUDIO_MAX_LAG_SECONDS", default=0.12)

    # Network
    stun_urls: tuple[str, ...] = _env("WEBRTC_STUN_URLS", default=DEFAULT_STUN_URLS)
    turn_urls: tuple[str, ...] = _env("WEBRTC_TURN_URLS", default=())
    turn_user: str = _env("WEBRTC_TURN_USER", default="")
    turn_pass: str = _env("WEBRTC_TURN_PASS", default="")
    ice_host_addresses: tuple[str, ...] = _env("WEBRTC_ICE_HOST_ADDRESSES", default=())
    """Host addresses the server gathers ICE candidates on; empty: every interface."""

    # Sessions
    max_sessions: int = _env("MAX_SESSIONS", default=16)
    session_idle_ttl_seconds: float = _env("SESSION_IDLE_TTL_SECONDS", default=600.0)
    session_reconnect_grace_seconds: float = _env(
        "SESSION_RECONNECT_GRACE_SECONDS", default=20.0
    )
    """How long a session whose peer connection failed or closed waits for a new offer."""
    session_connect_timeout_seconds: float = _env("SESSION_CONNECT_TIMEOUT_SECONDS", default=60.0)
    """How long a new session waits for an offer that leads to a connection."""
    webrtc_connect_timeout_seconds: float = _env("WEBRTC_CONNECT_TIMEOUT_SECONDS", default=30.0)
    """How long an answered peer connection may take to connect before it counts as failed."""
    max_offer_bytes: int = _env("MAX_OFFER_BYTES", default=64 * 1024)

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

    # Lip sync
    lipsync_engine: str = _env("LIPSYNC_ENGINE", default="auto")
    lipsync_device: str = _env("LIPSYNC_DEVICE", default="")
    """Torch device for the model engine; empty: cuda when available, else cpu."""
    lipsync_max_batch: int = _env("LIPSYNC_MAX_BATCH", default=0)
    """Most frames the render worker puts in one batch; 0: the engine's own default."""
    models_dir: Path = _env("MODELS_DIR", default=Path("models"))
    """MuseTalk's weights, in MuseTalk's own layout (models/README.md)."""
    musetalk_version: str = _env("MUSETALK_VERSION", default="auto")
    """MuseTalk weights to run: 1.5, 1.0, or auto (1.5 when its files are complete, else 1.0)."""
    musetalk_audio_window: str = _env("MUSETALK_AUDIO_WINDOW", default="centred")
    """Which audio each video frame sees: `centred` on the frame at every fps (MuseTalk's
    training window; the same as MuseTalk's at 25 fps), or `musetalk`, MuseTalk's realtime
    rule exactly, which at other rates sees audio from before the frame (at 10 fps: the
    200 ms before it, so the lips lag)."""
    avatars_dir: Path = _env("AVATARS_DIR", default=Path("avatars"))
    """Prepared avatars; engines cache what they compute for an avatar under its `.cache/`."""

    # Avatar preparation (README, "Avatars")
    avatar_max_upload_bytes: int = _env("AVATAR_MAX_UPLOAD_BYTES", default=200 * 1024 * 1024)
    avatar_min_video_seconds: float = _env("AVATAR_MIN_VIDEO_SECONDS", default=5.0)
    """Shorter videos are refused: their idle loop repeats visibly. 0 accepts any length."""
    avatar_max_video_seconds: float = _env("AVATAR_MAX_VIDEO_SECONDS", default=60.0)
    avatar_max_frame_side: int = _env("AVATAR_MAX_FRAME_SIDE", default=1920)
    """Longest side of a video frame, in pixels (every frame is kept in memory)."""
    avatar_max_faceless_share: float = _env("AVATAR_MAX_FACELESS_SHARE", default=0.1)
    """Share of frames allowed without a detected face; they borrow a neighbour's box."""

    log_level: str = _env("LOG_LEVEL", default="info")

    def __post_init__(self) -> None:
        problems = []
        if self.lipsync_engine not in ("auto", "demo", "musetalk"):
            problems.append("LIPSYNC_ENGINE must be one of auto, demo, musetalk")
        if self.musetalk_version not in ("auto", "1.5", "1.0"):
            problems.append("MUSETALK_VERSION must be one of auto, 1.5, 1.0")
        if self.musetalk_audio_window not in ("centred", "musetalk"):
            problems.append("MUSETALK_AUDIO_WINDOW must be one of centred, musetalk")
        for name in (
            "audio_prebuffer_seconds",
            "audio_max_lead_seconds",
            "audio_max_lag_seconds",
        ):
            if not 0 <= getattr(self, name) <= 5:
                problems.append(f"{_env_name(name)} must be between 0 and 5 seconds")
        for name in (
            "max_sessions", "max_upload_bytes", "avatar_max_upload_bytes", "avatar_max_frame_side"
        ):
            if getattr(self, name) < 1:
                problems.append(f"{_env_name(name)} must be at least 1")
        for name in ("session_idle_ttl_seconds", "max_audio_seconds", "avatar_max_video_seconds"):
            if getattr(self, name) <= 0:
                problems.append(f"{_env_name(name)} must be positive")
        if not 0 <= self.avatar_min_video_seconds <= self.avatar_max_video_seconds:
            problems.append(
                "AVATAR_MIN_VIDEO_SECONDS must be between 0 and AVATAR_MAX_VIDEO_SECONDS"
            )
        if not 0 <= self.avatar_max_faceless_share < 1:
            problems.append("AVATAR_MAX_FACELESS_SHARE must be at least 0 and below 1")
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
        if self.lipsync_max_batch < 0:
            problems.append("LIPSYNC_MAX_BATCH must not be negative")
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

    def ice_servers(self) -> list[dict[str, Any]]:
        """The ICE servers in the form browsers' RTCConfiguration takes."""
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
