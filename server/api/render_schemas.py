"""The request and response shapes of the renders API (`/renders`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from server.api.schemas import FPS_RANGE, ID_PATTERN, VOICE_MAX_CHARS

DEFAULT_RENDER_FPS = 25


class RenderTextRequest(BaseModel):
    """A render of text, spoken by the TTS backend (the JSON body of `POST /renders`)."""

    model_config = ConfigDict(extra="forbid")

    avatar_id: str = Field(default="demo", pattern=ID_PATTERN)
    text: str = Field(description="Plain text or SSML; markup is removed, never spoken.")
    voice: str | None = Field(
        default=None, max_length=VOICE_MAX_CHARS, description="A voice of the TTS backend; default TTS_VOICE."
    )
    fps: int = Field(default=DEFAULT_RENDER_FPS, ge=FPS_RANGE[0], le=FPS_RANGE[1])


class RenderInfo(BaseModel):
    render_id: str
    avatar_id: str
    state: Literal["queued", "running", "done", "failed"]
    progress: float = Field(ge=0, le=1, description="Share of the video's frames rendered and encoded.")
    fps: int
    source: Literal["audio", "text"]
    duration_seconds: float | None = Field(
        description="Seconds of speech (the video's length); null until known (text: once synthesised)."
    )
    frame_count: int | None = Field(description="Video frames; null until known.")
    error: str | None = Field(description="Why it failed; null unless failed.")
    video_url: str = Field(description="Where the MP4 is, once the state is done.")


class RenderDeleted(BaseModel):
    render_id: str
    deleted: bool = True
