"""Refusals in a vendor's own error shape, on that vendor's routes only.

A router built with `route_class=vendor_route(shape)` answers every refusal of its routes
(a `Refusal` from the handler or from a dependency such as the API key check or a rate
limit, a request that fails validation, the server shutting down) as `shape(status,
message)` instead of the native `{"detail": ...}`; statuses and headers are unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from server.api.errors import _describe_validation
from server.lipsync.worker import WorkerClosedError
from server.refusal import Refusal

ErrorShape = Callable[[int, str], dict[str, Any]]


def vendor_route(shape: ErrorShape) -> type[APIRoute]:
    """An APIRoute class whose refusals are written as `shape(status, message)`."""

    class VendorRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                try:
                    return await handler(request)
                except Refusal as error:
                    headers = dict(error.headers)
                    retry_after = error.extra.get("retry_after_seconds")
                    if retry_after is not None:
                        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
                    return _answer(request, shape, error.status, error.message, headers)
                except RequestValidationError as error:
                    return _answer(request, shape, 422, _describe_validation(error))
                except WorkerClosedError:
                    return _answer(request, shape, 503, "The server is shutting down.")
                except HTTPException as error:
                    return _answer(
                        request, shape, error.status_code, str(error.detail), error.headers
                    )

            return route

    return VendorRoute


def _answer(
    request: Request, shape: ErrorShape, status: int, message: str,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    server = getattr(request.app.state, "server", None)
    if server is not None:
        server.metrics.refused(status)
    return JSONResponse(shape(status, message), status_code=status, headers=headers)
