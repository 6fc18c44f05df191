"""The avatar API: prepare one from a video (a background job), follow it, list, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from server.api.access import ACCESS_RESPONSES, CONTROL
from server.api.dependencies import ServerDep
from server.api.openapi import invalid_request, link
from server.api.rate_limit import limit_uploads
from server.api.schemas import (
    ID_PATTERN,
    AvatarDeleted,
    AvatarInfo,
    AvatarList,
    ErrorResponse,
    PreparationJobInfo,
    PreparedAvatarInfo,
    RateLimitedResponse,
)
from server.api.uploads import FILE_PROPERTY, multipart_body, save_upload
from server.avatars.face_box import parse_box
from server.avatars.jobs import JobState, PreparationJob
from server.avatars.preparation import PreparationRequest
from server.avatars.recipe import recipe_version
from server.avatars.storage import UPLOAD_PREFIX, stored_latents
from server.avatars.store import BUILT_IN_AVATARS
from server.core import AvatarServer
from server.refusal import Refusal

router = APIRouter(
    prefix="/avatars", tags=["avatars"], dependencies=[CONTROL], responses=ACCESS_RESPONSES
)

VIDEO_FIELD = "video_file"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("", "0", "false", "no", "off")

NOT_FOUND = {404: {"model": ErrorResponse, "description": "No such avatar, nor a preparation of one."}}

# The preparation that `POST /avatars` starts is followed, and the avatar removed, by its id.
AVATAR_LINKS = {
    name: link(operation, description, avatar_id="$response.body#/avatar_id")
    for name, operation, description in (
        ("GetAvatar", "get_avatar", "Follow the preparation."),
        ("DeleteAvatar", "delete_avatar", "Remove the avatar."),
    )
}


@router.post(
    "",
    operation_id="prepare_avatar",
    status_code=202,
    response_model=AvatarInfo,
    openapi_extra=multipart_body(
        {
            VIDEO_FIELD: FILE_PROPERTY,
            "avatar_id": {"type": "string", "pattern": ID_PATTERN},
            "force": {"type": "boolean", "description": "replace an existing avatar"},
            "bbox": {"type": "string", "description": "x1,y1,x2,y2: every frame's face box"},
            "musetalk_version": {
                "type": "string", "enum": ["1.5", "1.0"],
                "description": "the MuseTalk version to prepare for; default: the server's",
            },
            "bbox_shift": {
                "type": "integer",
                "description": "MuseTalk 1.0 only: pixels the face box's centre moves down (-: up)",
            },
        },
        required=[VIDEO_FIELD, "avatar_id"],
    ),
    dependencies=[Depends(limit_uploads)],
    responses={
        202: {"links": AVATAR_LINKS},
        429: {"model": RateLimitedResponse, "description": "Too many uploads from this client."},
        400: {"model": ErrorResponse, "description": "Unreadable video or malformed form."},
        403: {"model": ErrorResponse, "description": "The built-in avatar's id."},
        409: {"model": ErrorResponse, "description": "Being prepared, or exists from another video."},
        413: {"model": ErrorResponse, "description": "Upload, video or frames too large or long."},
        415: {"model": ErrorResponse, "description": "Not multipart, or no video stream."},
        **invalid_request("Missing field, bad id, box or flag, video too short."),
        503: {
            "model": ErrorResponse,
            "description": "No face detector can run on this server, or it is shutting down.",
        },
    },
)
async def prepare_avatar(request: Request, response: Response, server: ServerDep) -> AvatarInfo:
    """Prepare an avatar from a video (multipart `video_file`, `avatar_id`) in the background.

    Follow it with `GET /avatars/{avatar_id}`: a face is looked for in every frame only
    then, so a video without a usable face fails there (state `failed`, with the reason).
    """
    settings = server.settings
    saved = await save_upload(
        request, VIDEO_FIELD, settings.avatar_max_upload_bytes, settings.avatars_dir, UPLOAD_PREFIX
    )
    try:
        avatar_id = saved.fields.get("avatar_id")
        if not avatar_id:
            raise Refusal("The form has no field 'avatar_id'; name the avatar there.", 422)
        bbox = _box(saved.fields.get("bbox"))
        version = saved.fields.get("musetalk_version") or None
        bbox_shift = _integer("bbox_shift", saved.fields.get("bbox_shift"))
        server.preparer.musetalk_recipe(bbox, version, bbox_shift)  # 422 now, not in the job
        preparation = PreparationRequest(
            saved.path,
            avatar_id,
            bbox=bbox,
            force=_flag(saved.fields.get("force", "")),
            source_name=saved.filename,
            sha256=saved.sha256,
            musetalk_version=version,
            bbox_shift=bbox_shift,
        )
        await server.preparations.submit(preparation)
    except BaseException:
        saved.path.unlink(missing_ok=True)
        raise
    response.headers["Location"] = f"/avatars/{avatar_id}"
    return describe(server, avatar_id)


@router.get(
    "",
    operation_id="list_avatars",
    response_model=AvatarList,
    responses={
        200: {
            "links": {
                "CreateSession": link(
                    "create_session",
                    "A session with a listed avatar (once its state is ready).",
                    avatar_id="$response.body#/avatars/0/avatar_id",
                )
            }
        }
    },
)
async def list_avatars(server: ServerDep) -> AvatarList:
    """Every avatar: the built-in one, those prepared, those being (or failing to be) prepared."""
    ids = set(server.avatars.available()) | {job.avatar_id for job in server.preparations.jobs()}
    return AvatarList(avatars=[describe(server, avatar_id) for avatar_id in sorted(ids)])


@router.get(
    "/{avatar_id}", operation_id="get_avatar", response_model=AvatarInfo, responses=NOT_FOUND
)
async def get_avatar(avatar_id: str, server: ServerDep) -> AvatarInfo:
    """An avatar's state (`queued`, `running`, `ready`, `failed`) and its preparation's progress."""
    if server.preparations.get(avatar_id) is None and not server.avatars.exists(avatar_id):
        raise Refusal(f"There is no avatar {avatar_id!r}, nor a preparation of one.", 404)
    return describe(server, avatar_id)


@router.delete(
    "/{avatar_id}",
    operation_id="delete_avatar",
    response_model=AvatarDeleted,
    responses={
        200: {"links": {"GetAvatar": AVATAR_LINKS["GetAvatar"]}},
        **NOT_FOUND,
        403: {"model": ErrorResponse, "description": "The built-in avatar."},
        409: {"model": ErrorResponse, "description": "In use by a session, or being prepared."},
    },
)
async def delete_avatar(avatar_id: str, server: ServerDep) -> AvatarDeleted:
    """Remove a prepared avatar that no session uses (and forget its failed preparation)."""
    job = server.preparations.get(avatar_id)
    if job is not None and job.active:
        raise Refusal(f"Avatar {avatar_id!r} is being prepared; wait until it is done.", 409)
    if job is not None and not server.avatars.exists(avatar_id):
        server.preparations.forget(avatar_id)  # only a failed preparation to forget
        return AvatarDeleted(avatar_id=avatar_id)
    await server.avatars.delete(avatar_id)
    server.preparations.forget(avatar_id)
    return AvatarDeleted(avatar_id=avatar_id)


def describe(server: AvatarServer, avatar_id: str) -> AvatarInfo:
    job = server.preparations.get(avatar_id)
    metadata = server.avatars.metadata(avatar_id)
    state, progress = "ready", 1.0
    if job is not None and job.state != JobState.DONE:
        state, progress = str(job.state), job.progress
    return AvatarInfo(
        avatar_id=avatar_id,
        state=state,
        progress=round(progress, 3),
        built_in=avatar_id in BUILT_IN_AVATARS,
        sessions=server.avatars.users(avatar_id),
        error=job.error if job is not None else None,
        job=_job_info(job) if job is not None else None,
        prepared=_prepared_info(server, metadata) if metadata is not None else None,
    )


def _job_info(job: PreparationJob) -> PreparationJobInfo:
    return PreparationJobInfo(
        state=str(job.state),
        progress=round(job.progress, 3),
        submitted_at=job.submitted_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        error_status=job.error_status,
        error=job.error,
        reused=job.result.reused if job.result is not None else None,
    )


def _prepared_info(server: AvatarServer, metadata: dict[str, Any]) -> PreparedAvatarInfo:
    source = metadata["source"]
    return PreparedAvatarInfo(
        frame_count=metadata["frame_count"],
        fps=metadata["fps"],
        width=metadata["width"],
        height=metadata["height"],
        duration_seconds=round(metadata["frame_count"] / metadata["fps"], 3),
        source_name=source.get("name"),
        source_sha256=source["sha256"],
        prepared_at=metadata["prepared_at"],
        landmarks=metadata["recipe"]["landmarks"],
        face_parsing=metadata["recipe"]["face_parsing"],
        musetalk_version=recipe_version(metadata),
        bbox_shift=int(metadata["recipe"].get("bbox_shift", 0)),
        warnings=metadata.get("warnings", []),
        latents=stored_latents(server.settings.avatars_dir / metadata["avatar_id"]),
    )


def _box(text: str | None) -> tuple[int, int, int, int] | None:
    if not text:
        return None
    try:
        return parse_box(text)
    except ValueError as error:
        raise Refusal(f"The field 'bbox' is invalid: {error}.", 422) from None


def _integer(name: str, text: str | None) -> int | None:
    if text is None or not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        raise Refusal(f"The field {name!r} must be a whole number of pixels (got {text!r}).", 422) from None


def _flag(text: str) -> bool:
    if text.strip().lower() in TRUE_WORDS:
        return True
    if text.strip().lower() in FALSE_WORDS:
        return False
    raise Refusal(f"The field 'force' must be true or false (got {text!r}).", 422)
