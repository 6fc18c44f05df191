"""Reading a multipart upload with a size limit enforced while it arrives."""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message

# Room for the multipart boundaries and part headers around the file itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
READ_BLOCK_BYTES = 1024 * 1024


class UploadError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_upload(request: Request, field: str, max_bytes: int) -> tuple[bytes, str | None]:
    """The bytes and filename of file field `field` of a multipart/form-data request.

    Raises `UploadError`: 413 past `max_bytes`, 415 for another content type, 422 when
    the field is missing or is not a file.
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise UploadError(
            415,
            f"Send the audio as multipart/form-data with the file field {field!r} "
            f"(got content type {content_type or 'none'!r}).",
        )
    too_large = UploadError(
        413, f"The upload is larger than the limit of {max_bytes} bytes."
    )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD_BYTES:
        raise too_large

    received = 0
    receive = request.receive

    async def limited_receive() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > max_bytes + MULTIPART_OVERHEAD_BYTES:
            raise too_large
        return message

    limited = Request(request.scope, limited_receive)
    try:
        form = await limited.form(max_files=4, max_fields=16)
    except UploadError:
        raise
    except Exception as error:  # malformed multipart bodies raise assorted errors
        raise UploadError(400, f"The multipart body could not be parsed: {error}") from None
    try:
        upload = form.get(field)
        if upload is None:
            raise UploadError(422, f"The form has no field {field!r}; put the audio file there.")
        if not isinstance(upload, UploadFile):
            raise UploadError(422, f"The field {field!r} must be a file, not a text value.")
        data = bytearray()
        while block := await upload.read(READ_BLOCK_BYTES):
            data += block
            if len(data) > max_bytes:
                raise too_large
        return bytes(data), upload.filename
    finally:
        await form.close()
