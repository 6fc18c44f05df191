"""What route handlers receive from FastAPI's dependency injection."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from server.core import AvatarServer


# Dependencies are `async def` even when they do not wait: FastAPI runs a plain `def` one
# in its thread pool, a trip there and back that waits for a free core and a turn of the
# loop on each side (tens of ms per request on a busy server, before the handler starts).


async def get_server(request: Request) -> AvatarServer:
    return request.app.state.server


ServerDep = Annotated[AvatarServer, Depends(get_server)]
