"""Renders: `POST /renders` (audio or text) -> an MP4 rendered in the background."""

from __future__ import annotations

import json
import re

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import ValidationError

from server.api.access import ACCESS_RESPONSES, CONTROL
from server.api.dependencies import ServerDep
from server.api.rate_limit import limit_uploads
from server.api.openapi import RETRY_AFTER_HEADER, invalid_request, link
from server.api.render_schemas import DEFAULT_RENDER_FPS, RenderDeleted, RenderInfo, RenderTextRequest
from server.api.schemas import FPS_RANGE, ID_PATTERN, AvatarNotFoundResponse, BusyResponse, ErrorResponse
from server.api.uploads import FILE_PROPERTY, UploadError, read_upload_form
from server.core import AvatarServer
from server.refusal import Refusal
from server.renders.jobs import RenderJob
from server.sessions.text_speech import checked_text

router = APIRouter(
    prefix="/renders", tags=["renders"], dependencies=[CONTROL], responses=ACCESS_RESPONSES
)

AUDIO_FIELD = "audio_file"
JSON_TYPE = "application/json"
MULTIPART_TYPE = "multipart/form-data"
MAX_JSON_BYTES = 64 * 1024
VIDEO_TYPE = "video/mp4"

RENDER_LINKS = {
    name: link(operation, description, render_id="$response.body#/render_id")
    for name, operation, description in (
        ("GetRender", "get_render", "The render's state and progress."),
        ("GetRenderVideo", "get_render_video", "The MP4, once done."),
        ("DeleteRender", "delete_render", "Stop the render and remove its file."),
    )
}
NOT_FOUND = {404: {"model": ErrorResponse, "description": "Unknown, deleted or expired render."}}

UPLOAD_SCHEMA = {
    "type": "object",
    "required": [AUDIO_FIELD],
    "properties": {
        AUDIO_FIELD: FILE_PROPERTY,
        "avatar_id": {"type": "string", "pattern": ID_PATTERN, "default": "demo"},
        "fps": {
            "type": "integer", "minimum": FPS_RANGE[0], "maximum": FPS_RANGE[1],
            "default": DEFAULT_RENDER_FPS,
        },
    },
}


class RenderRequestError(Refusal):
    status = 422


def _info(job: RenderJob) -> RenderInfo:
    return RenderInfo(
        render_id=job.id,
        avatar_id=job.avatar_id,
        state=job.state.value,
        progress=job.progress,
        fps=job.fps,
        source=job.source,
        duration_seconds=job.duration_seconds,
        frame_count=job.frame_count,
        error=job.error,
        video_url=f"/renders/{job.id}/video",
    )


@router.post(
    "",
    operation_id="create_render",
    status_code=202,
    dependencies=[Depends(limit_uploads)],  # an upload or a text to speak, as /stream and /say
    response_model=RenderInfo,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                JSON_TYPE: {"schema": RenderTextRequest.model_json_schema()},
                MULTIPART_TYPE: {"schema": UPLOAD_SCHEMA},
            },
        }
    },
    responses={
        202: {
            "links": RENDER_LINKS,
            "headers": {"Location": {"description": "The render's URL.", "schema": {"type": "string"}}},
        },
        400: {"model": ErrorResponse, "description": "Empty, corrupt or truncated audio; a malformed body."},
        404: {"model": AvatarNotFoundResponse, "description": "Unknown avatar."},
        413: {"model": ErrorResponse, "description": "Upload too large, audio too long, or past a decoding limit."},
        415: {"model": ErrorResponse, "description": "Neither JSON nor multipart, or not audio."},
        **invalid_request(
            "No `audio_file` file, a field out of range, empty or too long text, an unknown "
            "voice, or unusable audio."
        ),
        429: {
            "model": BusyResponse,
            "description": "RENDERS_MAX_JOBS renders are queued or running.",
            "headers": RETRY_AFTER_HEADER,
        },
        503: {
            "model": BusyResponse,
            "description": "Every decode slot is taken, the TTS backend is unavailable, the "
            "render does not fit the server's capacity now, or the server is shutting down.",
            "headers": RETRY_AFTER_HEADER,
        },
    },
)
async def create_render(request: Request, response: Response, server: ServerDep) -> RenderInfo:
    """Render speech into an MP4 (H.264 + AAC) in the background: a JSON body
    `{avatar_id, text, voice?, fps?}` is spoken by the TTS backend, a multipart form
    `audio_file` (with `avatar_id`, `fps`) is the speech itself. Follow `GET
    /renders/{id}` until `done`, then fetch `video_url`."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith(JSON_TYPE):
        job = await _text_render(request, server)
    elif content_type.startswith(MULTIPART_TYPE):
        job = await _audio_render(request, server)
    else:
        raise UploadError(
            415,
            f"Send JSON ({{\"avatar_id\", \"text\"}}) or a multipart form with the file field "
            f"{AUDIO_FIELD!r} (got content type {content_type or 'none'!r}).",
        )
    response.headers["Location"] = f"/renders/{job.id}"
    return _info(job)


async def _text_render(request: Request, server: AvatarServer) -> RenderJob:
    body = await _json_body(request)
    try:
        params = RenderTextRequest.model_validate(body)
    except ValidationError as error:
        raise RequestValidationError(error.errors()) from None
    settings = server.settings
    spoken = checked_text(params.text, settings.tts_max_chars)
    tts = server.tts
    voice = tts.check_voice(params.voice)
    tts.check_available()

    async def speech() -> np.ndarray:
        return (await tts.synthesize(spoken, voice)).samples

    return server.renders.submit(params.avatar_id, params.fps, "text", speech)


async def _audio_render(request: Request, server: AvatarServer) -> RenderJob:
    try:
        upload = await read_upload_form(request, AUDIO_FIELD, server.settings.max_upload_bytes)
    except Refusal as error:
        server.metrics.upload_refused(error)
        raise
    avatar_id = upload.fields.get("avatar_id", "demo")
    if not re.fullmatch(ID_PATTERN, avatar_id):
        raise RenderRequestError(f"Invalid avatar_id {avatar_id!r}: letters, digits, '_', '.', '-'.")
    fps = _form_fps(upload.fields.get("fps"))
    server.renders.check_avatar(avatar_id)  # before the decoding it would waste
    try:
        decoded = await server.decode_audio(upload.data)
    except Refusal as error:
        server.metrics.upload_refused(error)
        raise
    samples = decoded.samples

    async def speech() -> np.ndarray:
        return samples

    return server.renders.submit(avatar_id, fps, "audio", speech)


def _form_fps(value: str | None) -> int:
    if value is None or value.strip() == "":
        return DEFAULT_RENDER_FPS
    try:
        fps = int(value.strip())
    except ValueError:
        fps = 0
    if not FPS_RANGE[0] <= fps <= FPS_RANGE[1]:
        raise RenderRequestError(
            f"fps must be a whole number from {FPS_RANGE[0]} to {FPS_RANGE[1]}, not {value!r}."
        )
    return fps


async def _json_body(request: Request) -> object:
    data = bytearray()
    async for block in request.stream():
        data += block
        if len(data) > MAX_JSON_BYTES:
            raise UploadError(413, f"The JSON body is larger than {MAX_JSON_BYTES} bytes.")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise UploadError(400, f"The body is not valid JSON: {error}.") from None


@router.get("/{render_id}", operation_id="get_render", response_model=RenderInfo, responses=NOT_FOUND)
async def get_render(render_id: str, server: ServerDep) -> RenderInfo:
    """The render's state (queued, running, done, failed), progress and error."""
    return _info(server.renders.get(render_id))


@router.get(
    "/{render_id}/video",
    operation_id="get_render_video",
    response_class=FileResponse,
    responses={
        200: {"content": {VIDEO_TYPE: {}}, "description": "The MP4: H.264 video, AAC audio."},
        **NOT_FOUND,
        409: {
            "model": BusyResponse,
            "description": "Not done yet (with `retry_after_seconds`), or it failed.",
            "headers": RETRY_AFTER_HEADER,
        },
    },
)
async def get_render_video(render_id: str, server: ServerDep) -> FileResponse:
    """The rendered MP4, once the render is done."""
    path = server.renders.video(render_id)
    return FileResponse(path, media_type=VIDEO_TYPE, filename=f"{render_id}.mp4")


@router.delete(
    "/{render_id}", operation_id="delete_render", response_model=RenderDeleted, responses=NOT_FOUND
)
async def delete_render(render_id: str, server: ServerDep) -> RenderDeleted:
    """Stop the render if it runs, and remove it and its file."""
    await server.renders.delete(render_id)
    return RenderDeleted(render_id=render_id)
