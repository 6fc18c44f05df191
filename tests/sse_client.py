"""A server-sent events reader for the tests: httpx streaming, parsed into events."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class EventStream:
    """What one listener of `GET /webrtc/sessions/{id}/events` received."""

    events: list[dict[str, Any]] = field(default_factory=list)
    """Each event's JSON, with its `event:` as `_event`, `id:` as `_id`, and `arrival`."""
    comments: list[str] = field(default_factory=list)
    status: int | None = None
    content_type: str | None = None
    ended: bool = False

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    async def wait_for(self, kind: str, timeout: float, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.of_type(kind):
                if all(event.get(k) == v for k, v in fields.items()):
                    return event
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no {kind!r} {fields} event within {timeout} s: {self.events}")


async def read_events(http: httpx.AsyncClient, session_id: str, into: EventStream) -> None:
    """Read the session's event stream into `into` until the server ends it."""
    async with http.stream("GET", f"/webrtc/sessions/{session_id}/events", timeout=None) as response:
        into.status = response.status_code
        into.content_type = response.headers.get("content-type")
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line.startswith(":"):
                into.comments.append(line)
            elif line == "":
                if "data" in fields:
                    event = json.loads(fields["data"])
                    event["_event"] = fields.get("event")
                    event["_id"] = fields.get("id")
                    event["arrival"] = time.monotonic()
                    into.events.append(event)
                fields = {}
            else:
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
    into.ended = True
