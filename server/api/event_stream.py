"""A session's events as server-sent events (text/event-stream)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

from fastapi.responses import StreamingResponse

from server.sessions.events import EventFanout, SessionEvent

MEDIA_TYPE = "text/event-stream"
HEARTBEAT = ": heartbeat\n\n"


def format_event(event: SessionEvent) -> str:
    """One event: `id:` its sequence number, `event:` its type, `data:` its JSON."""
    lines = [] if event.seq is None else [f"id: {event.seq}"]
    lines += [f"event: {event.type}", f"data: {json.dumps(event.message())}"]
    return "\n".join(lines) + "\n\n"


async def _stream(
    fanout: EventFanout, first: Callable[[], SessionEvent], heartbeat_seconds: float
) -> AsyncIterator[str]:
    async with fanout.listen(first()) as listener:
        while True:
            try:
                event = await listener.next(timeout=heartbeat_seconds)
            except TimeoutError:
                yield HEARTBEAT
                continue
            if event is None:
                return
            yield format_event(event)


def event_stream_response(
    fanout: EventFanout, first: Callable[[], SessionEvent], heartbeat_seconds: float
) -> StreamingResponse:
    """The events from `first()` (the state now) on, until the session ends."""
    return StreamingResponse(
        _stream(fanout, first, heartbeat_seconds),
        media_type=MEDIA_TYPE,
        # Proxies (nginx) must pass each event on at once rather than buffer the stream.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
