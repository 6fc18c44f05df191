"""Refusals in a vendor's own error shape, on that vendor's routes only.

A router built with `route_class=vendor_route(shape)` answers every refusal of its routes
(a `Refusal` from the handler or from a dependency such as the API key check or a rate
limit, a request that fails validation, the server shutting down) as `shape(status,
message)` instead of the native `{"detail": ...}`; statuses and headers are unchanged.
`refusal_route(write)` is the same for a vendor whose answer depends on the kind of
refusal (HeyGen's codes): `write` gets the `Refusal` itself.
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
RefusalWriter = Callable[[Refusal], tuple[int, dict[str, Any], dict[str, str]]]
"""A refusal as a vendor writes it: (status, JSON body, headers)."""


class InvalidRequest(Refusal):
    """A request that failed validation, on a vendor's route; `extra["errors"]` holds
    pydantic's errors, for a vendor that describes them its own way."""

    status = 422


def vendor_route(shape: ErrorShape) -> type[APIRoute]:
    """An APIRoute class whose refusals are written as `shape(status, message)`."""

    def write(refusal: Refusal) -> tuple[int, dict[str, Any], dict[str, str]]:
        headers = dict(refusal.headers)
        retry_after = refusal.extra.get("retry_after_seconds")
        if retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        return refusal.status, shape(refusal.status, refusal.message), headers

    return refusal_route(write)


def refusal_route(write: RefusalWriter) -> type[APIRoute]:
    """An APIRoute class whose every refusal (the handler's, its dependencies', a failed
    validation, the server shutting down, Starlette's HTTP errors) is answered as `write`
    makes it, and counted in the metrics."""

    class VendorRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                try:
                    return await handler(request)
                except Refusal as error:
                    refusal = error
                except RequestValidationError as error:
                    refusal = InvalidRequest(_describe_validation(error), errors=error.errors())
                except WorkerClosedError:
                    refusal = Refusal("The server is shutting down.", 503)
                except HTTPException as error:
                    refusal = Refusal(str(error.detail), error.status_code)
                    refusal.headers = dict(error.headers or {})
                status, body, headers = write(refusal)
                server = getattr(request.app.state, "server", None)
                if server is not None:
                    server.metrics.refused(status)
                return JSONResponse(body, status_code=status, headers=headers)

            return route

    return VendorRoute
