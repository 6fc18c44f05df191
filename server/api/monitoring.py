"""What operators and orchestrators poll: readiness and Prometheus metrics.

`/health` (server/api/pages.py) says the process serves; `/ready` says whether it can
take new sessions now.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from server.api.access import ACCESS_RESPONSES, CONTROL
from server.api.dependencies import ServerDep
from server.api.schemas import ErrorResponse, Ready
from server.metrics import CONTENT_TYPE
from server.refusal import Refusal

router = APIRouter(tags=["server"])


class NotReadyError(Refusal):
    status = 503


@router.get(
    "/ready",
    response_model=Ready,
    responses={503: {"model": ErrorResponse, "description": "Not ready; `detail` says why."}},
)
async def ready(server: ServerDep) -> Ready:
    """200 while the engine is loaded, the render worker runs and sessions are taken."""
    reason = server.unready_reason()
    if reason is not None:
        raise NotReadyError(reason)
    return Ready(
        engine=server.engine.name,
        sessions=len(server.sessions),
        max_sessions=server.sessions.max_sessions,
    )


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[CONTROL],  # per-session figures are for the operator (README, "Access")
    responses={
        200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus' text format."},
        **ACCESS_RESPONSES,
    },
)
async def metrics(server: ServerDep) -> Response:
    """The server's metrics for Prometheus (README, "Monitoring")."""
    return Response(server.metrics.exposition(), media_type=CONTENT_TYPE)
