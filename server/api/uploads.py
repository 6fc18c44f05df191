"""Reading a multipart upload with a size limit enforced while it arrives."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.types import Message

from server.refusal import Refusal

# Room for the multipart boundaries and part headers around the file itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
READ_BLOCK_BYTES = 1024 * 1024


class UploadError(Refusal, ValueError):
    """An upload that cannot be read: too large, not multipart, a field missing."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status)


@dataclass(frozen=True)
class SavedUpload:
    """A file field written to disk, with the form's text fields."""

    path: Path
    filename: str | None
    sha256: str
    fields: dict[str, str]


async def read_upload(request: Request, field: str, max_bytes: int) -> tuple[bytes, str | None]:
    """The bytes and filename of file field `field` of a multipart/form-data request.

    Raises `UploadError`: 413 past `max_bytes`, 415 for another content type, 422 when
    the field is missing or is not a file.
    """
    upload = await read_upload_form(request, field, max_bytes)
    return upload.data, upload.filename


@dataclass(frozen=True)
class ReadUpload:
    """A file field read into memory, with the form's text fields."""

    data: bytes
    filename: str | None
    fields: dict[str, str]


async def read_upload_form(request: Request, field: str, max_bytes: int) -> ReadUpload:
    """`read_upload`, with the form's text fields too."""
    async with _multipart_form(request, field, max_bytes) as form:
        upload = _file(form, field)
        fields = {key: value for key, value in form.multi_items() if isinstance(value, str)}
        data = bytearray()
        while block := await upload.read(READ_BLOCK_BYTES):
            data += block
            if len(data) > max_bytes:
                raise _too_large(max_bytes)
        return ReadUpload(bytes(data), upload.filename, fields)


async def save_upload(
    request: Request, field: str, max_bytes: int, directory: Path, prefix: str
) -> SavedUpload:
    """File field `field` saved as a new file in `directory` (named `prefix`...), hashed.

    The caller owns the file. Raises `UploadError` as `read_upload` does.
    """
    async with _multipart_form(request, field, max_bytes) as form:
        upload = _file(form, field)
        fields = {key: value for key, value in form.multi_items() if isinstance(value, str)}
        directory.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=directory, prefix=prefix)
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(handle, "wb") as file:
                while block := await upload.read(READ_BLOCK_BYTES):
                    size += len(block)
                    if size > max_bytes:
                        raise _too_large(max_bytes)
                    digest.update(block)
                    file.write(block)
        except BaseException:
            os.unlink(name)
            raise
        return SavedUpload(Path(name), upload.filename, digest.hexdigest(), fields)


def multipart_body(properties: dict[str, dict[str, str]], required: list[str]) -> dict[str, Any]:
    """The OpenAPI description of a multipart form request (its body is read by hand here,
    so FastAPI cannot derive it); for a route's `openapi_extra`."""
    schema = {"type": "object", "required": required, "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


FILE_PROPERTY = {"type": "string", "format": "binary"}


def _too_large(max_bytes: int) -> UploadError:
    return UploadError(413, f"The upload is larger than the limit of {max_bytes} bytes.")


def _file(form: FormData, field: str) -> UploadFile:
    upload = form.get(field)
    if upload is None:
        raise UploadError(422, f"The form has no field {field!r}; put the file there.")
    if not isinstance(upload, UploadFile):
        raise UploadError(422, f"The field {field!r} must be a file, not a text value.")
    return upload


@contextlib.asynccontextmanager
async def _multipart_form(request: Request, field: str, max_bytes: int) -> AsyncIterator[FormData]:
    """The request's form, parsed while counting its bytes against the limit."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise UploadError(
            415,
            f"Send the file as multipart/form-data with the file field {field!r} "
            f"(got content type {content_type or 'none'!r}).",
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD_BYTES:
        raise _too_large(max_bytes)

    received = 0
    receive = request.receive

    async def limited_receive() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > max_bytes + MULTIPART_OVERHEAD_BYTES:
            raise _too_large(max_bytes)
        return message

    limited = Request(request.scope, limited_receive)
    try:
        form = await limited.form(max_files=4, max_fields=16)
    except UploadError:
        raise
    except Exception as error:  # malformed multipart bodies raise assorted errors
        raise UploadError(400, f"The multipart body could not be parsed: {error}") from None
    try:
        yield form
    finally:
        await form.close()
