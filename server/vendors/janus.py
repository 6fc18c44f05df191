"""D-ID's `JanusDataChannel` dialect: events as `subject:payload` text (used by TWIN too).

The client creates the channel (label `JanusDataChannel`). The server tells it
`stream/ready` once it is open, `stream/started` with `{"metadata": {"videoId": …}}` when
an utterance starts, `stream/done` when it ends (played, interrupted or dropped) and
`stream/error` when it fails. The client may send `stream/interrupt` (as that text, or as
D-ID's client SDK sends it, a JSON object `{"type": "stream/interrupt", "videoId": …}`):
what plays now stops and the queue is cleared.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from server.sessions.events import SessionEvent

if TYPE_CHECKING:
    from server.sessions.session import Session

JANUS_LABEL = "JanusDataChannel"
READY = "stream/ready"
STARTED = "stream/started"
DONE = "stream/done"
ERROR = "stream/error"
INTERRUPT = "stream/interrupt"
# The session's events that end an utterance, as D-ID's `stream/done`.
ENDING_EVENTS = ("speaking_ended", "utterance_interrupted", "utterance_cancelled")
FAILING_EVENTS = ("error", "utterance_dropped")


def message(subject: str, payload: dict[str, Any]) -> str:
    """One Janus message: the subject, a colon, the JSON payload."""
    return f"{subject}:{json.dumps(payload, separators=(',', ':'))}"


class JanusDialect:
    """Session events as D-ID's stream events; `stream/interrupt` from the client cuts speech."""

    def encode(self, event: SessionEvent) -> list[str]:
        fields = event.fields
        video_id = fields.get("utterance_id")
        metadata = {"videoId": video_id} if video_id else {}
        if event.seq is None:  # the state snapshot a channel gets when it opens
            return [message(READY, {"metadata": {"session_id": fields.get("session_id")}})]
        if event.type == "speaking_started":
            return [message(STARTED, {"metadata": metadata})]
        if event.type in ENDING_EVENTS:
            return [message(DONE, {"metadata": metadata})]
        if event.type in FAILING_EVENTS:
            description = fields.get("detail") or fields.get("reason") or "speech failed"
            return [message(ERROR, {"metadata": metadata, "description": description})]
        return []

    def receive(self, session: Session, message: str | bytes) -> None:
        if isinstance(message, bytes):
            return
        if _subject(message) == INTERRUPT:
            session.interrupt()


def _subject(text: str) -> str | None:
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value.get("type") if isinstance(value, dict) else None
    return text.split(":", 1)[0]


JANUS = JanusDialect()
