"""HeyGen Streaming API v1's data channel: the events its clients expect, as they send them.

HeyGen's server creates the channel itself (it is in the offer of `streaming.new`) and
writes each event as a JSON object in a *binary* message: `@heygen/streaming-avatar` 1.x
only reads messages that arrive as an ArrayBuffer. Two events exist in v1:
`avatar_start_talking {task_id}` and `avatar_stop_talking {task_id, duration_ms}`; a task
is one utterance (its id is the `task_id` that `streaming.task` answered). An utterance
cut by `streaming.interrupt` (or dropped before it ended) also ends with
`avatar_stop_talking`, `duration_ms` being what was heard. Clients send nothing on it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from server.sessions.events import SessionEvent

if TYPE_CHECKING:
    from server.sessions.session import Session

CHANNEL_LABEL = "heygen"
"""The label of the server-created channel (HeyGen's clients take any)."""
START_TALKING = "avatar_start_talking"
STOP_TALKING = "avatar_stop_talking"
# Session events that end an utterance, whatever the reason.
ENDING_EVENTS = ("speaking_ended", "utterance_interrupted", "utterance_cancelled")
MS_PER_SECOND = 1000


class HeygenDialect:
    """The session's events as HeyGen v1 tells them; what the client sends is ignored."""

    def encode(self, event: SessionEvent) -> Sequence[str | bytes]:
        fields = event.fields
        if event.type == "speaking_started":
            message = {"type": START_TALKING, "task_id": fields["utterance_id"]}
        elif event.type in ENDING_EVENTS:
            played = float(fields.get("played_seconds") or 0.0)
            message = {
                "type": STOP_TALKING,
                "task_id": fields["utterance_id"],
                "duration_ms": round(played * MS_PER_SECOND),
            }
        else:
            return []
        return [json.dumps(message).encode("utf-8")]

    def receive(self, session: Session, message: str | bytes) -> None:
        return None


HEYGEN = HeygenDialect()
