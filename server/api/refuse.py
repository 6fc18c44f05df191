"""Refusing a request from middleware, before any route sees it: the same JSON
`{"detail": "..."}` as every other refusal (a WebSocket is closed instead)."""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

POLICY_VIOLATION = 1008  # WebSocket close code


async def refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": detail[:120]})
        return
    await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
