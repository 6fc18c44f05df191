"""A session's events: one event object, fanned out to the data channel and to listeners.

Every event a session tells its clients (state changes, utterances queued, started,
ended, interrupted, errors) is a `SessionEvent` published once on the session's
`EventFanout`. Sinks (the WebRTC data channels) get each event synchronously; listeners
(`GET /webrtc/sessions/{id}/events`, server-sent events) each read from a bounded
backlog of their own, so a slow listener never holds the session up: when its backlog is
full its *oldest* events are dropped, and the next event it reads is an `events_lost`
event saying how many (the sequence numbers show where).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

EVENTS_LOST = "events_lost"


@dataclass(frozen=True)
class SessionEvent:
    """One thing that happened to a session. `seq` counts a session's published events
    from 1; a snapshot (the state a new listener starts from) has none."""

    type: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    seq: int | None = None
    time: float = field(default_factory=time.time)

    def message(self) -> dict[str, Any]:
        """The JSON object clients get: `type`, the fields, `seq` and `time` (epoch s)."""
        return {"type": self.type, **self.fields, "seq": self.seq, "time": round(self.time, 3)}


class EventListener:
    """One reader's backlog of events, at most `backlog` long (the oldest go first)."""

    def __init__(self, backlog: int) -> None:
        self._events: deque[SessionEvent] = deque()
        self._backlog = backlog
        self._wakeup = asyncio.Event()
        self._ended = False
        self.lost = 0
        """Events dropped so far because the backlog was full."""
        self._lost_unreported = 0

    def push(self, event: SessionEvent) -> None:
        if self._ended:
            return
        if len(self._events) >= self._backlog:
            self._events.popleft()
            self.lost += 1
            self._lost_unreported += 1
        self._events.append(event)
        self._wakeup.set()

    def end(self) -> None:
        """No more events: `next` returns what is left, then None."""
        self._ended = True
        self._wakeup.set()

    async def next(self, timeout: float | None = None) -> SessionEvent | None:
        """The next event; None once ended and drained. Raises TimeoutError after `timeout`."""
        while not self._events and not self._ended:
            self._wakeup.clear()
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        if self._lost_unreported:
            count, self._lost_unreported = self._lost_unreported, 0
            return SessionEvent(EVENTS_LOST, {"count": count})
        if not self._events:
            return None
        return self._events.popleft()


class EventFanout:
    """Publishes a session's events to its sinks and listeners, numbered in order."""

    def __init__(self, backlog: int, common: Mapping[str, Any] | None = None) -> None:
        self._backlog = backlog
        self._common = dict(common or {})
        self._seq = itertools.count(1)
        self._sinks: list[Callable[[SessionEvent], None]] = []
        self._listeners: set[EventListener] = set()
        self.closed = False

    @property
    def listener_count(self) -> int:
        return len(self._listeners)

    def add_sink(self, sink: Callable[[SessionEvent], None]) -> None:
        """Call `sink` with every event from now on (it must not block)."""
        self._sinks.append(sink)

    def event(self, type: str, **fields: Any) -> SessionEvent:
        """An unpublished event (a snapshot), with the fields every event carries."""
        return SessionEvent(type, {**self._common, **fields})

    def publish(self, type: str, **fields: Any) -> SessionEvent:
        event = SessionEvent(type, {**self._common, **fields}, seq=next(self._seq))
        for sink in self._sinks:
            sink(event)
        for listener in self._listeners:
            listener.push(event)
        return event

    @asynccontextmanager
    async def listen(self, first: SessionEvent | None = None) -> AsyncIterator[EventListener]:
        """A listener for the events published from now on, starting with `first`."""
        listener = EventListener(self._backlog)
        if first is not None:
            listener.push(first)
        if self.closed:
            listener.end()
        self._listeners.add(listener)
        try:
            yield listener
        finally:
            self._listeners.discard(listener)

    def close(self) -> None:
        """End every listener once it has read what was published."""
        self.closed = True
        for listener in self._listeners:
            listener.end()
