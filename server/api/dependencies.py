"""What route handlers receive from FastAPI's dependency injection."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from server.core import AvatarServer


def get_server(request: Request) -> AvatarServer:
    return request.app.state.server


ServerDep = Annotated[AvatarServer, Depends(get_server)]
