"""Errors as JSON `{"detail": "..."}` with the status that says what went wrong."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.lipsync.worker import WorkerClosedError
from server.refusal import Refusal

logger = logging.getLogger(__name__)


def _error(status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status, headers=headers)


def _counted(request: Request, response: JSONResponse) -> JSONResponse:
    """`response`, counted in the server's refusals by status."""
    server = getattr(request.app.state, "server", None)
    if server is not None:
        server.metrics.refused(response.status_code)
    return response


def _describe_validation(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(p) for p in item.get("loc", ()) if p not in ("query", "body"))
        parts.append(f"{location or 'request'}: {item.get('msg', 'invalid')}")
    return "Invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Refusal)
    async def refused(request: Request, error: Refusal) -> JSONResponse:
        headers = dict(error.headers)
        retry_after = error.extra.get("retry_after_seconds")
        if retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        return _counted(request, _error(error.status, error.message, headers, **error.extra))

    @app.exception_handler(WorkerClosedError)
    async def worker_closed(request: Request, error: WorkerClosedError) -> JSONResponse:
        return _counted(request, _error(503, "The server is shutting down."))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return _counted(
            request, _error(422, _describe_validation(error), errors=_jsonable(error.errors()))
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return _counted(request, _error(error.status_code, str(error.detail), error.headers))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error in %s %s", request.method, request.url.path)
        return _counted(request, _error(500, "Internal server error; the server log has the details."))


def _jsonable(errors: Any) -> list[dict[str, Any]]:
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        for e in errors
    ]
