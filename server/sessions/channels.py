"""How a data channel speaks: the wire form of a session's events, and what it may say back.

The native channel (`events`, JSON objects) is one dialect; the vendor surfaces (D-ID's and
TWIN's `JanusDataChannel` with `subject:payload` text, HeyGen's server-created channel)
are others. A session keeps each open channel with its dialect: every event is encoded by
the channel's own dialect, and every message the client sends on it goes to that dialect.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from server.sessions.events import SessionEvent

if TYPE_CHECKING:
    from server.sessions.session import Session


class ChannelDialect(Protocol):
    """The wire form of one kind of data channel."""

    def encode(self, event: SessionEvent) -> Sequence[str | bytes]:
        """The messages that tell `event` on this channel (none: this dialect skips it);
        `bytes` go as binary messages."""
        ...

    def receive(self, session: Session, message: str | bytes) -> None:
        """Act on a message the client sent on this channel (the default ignores them)."""
        ...


class NativeDialect:
    """The `events` channel: every event as the JSON object of `SessionEvent.message`;
    what the client sends is ignored (speech is asked for over HTTP)."""

    def encode(self, event: SessionEvent) -> list[str]:
        return [json.dumps(event.message())]

    def receive(self, session: Session, message: str | bytes) -> None:
        return None


NATIVE = NativeDialect()
