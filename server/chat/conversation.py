"""A session's conversation with the LLM: its system prompt and a bounded history."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Message:
    role: Literal["system", "user", "assistant"]
    content: str

    def as_json(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


class Conversation:
    """The turns so far, at most `max_messages` of them and `max_chars` of text (the
    oldest go first, a user message with the reply to it); one turn at a time."""

    def __init__(self, system_prompt: str, max_messages: int, max_chars: int) -> None:
        self.system_prompt = system_prompt
        self.max_messages = max_messages
        self.max_chars = max_chars
        self._history: deque[Message] = deque()
        self.turn_lock = asyncio.Lock()
        """Held while a turn runs; a second turn is refused meanwhile, or stops it."""
        self.running: Any = None
        """The turn holding `turn_lock` (a `ChatTurn`), for a barge-in to stop."""

    @property
    def history(self) -> list[Message]:
        return list(self._history)

    def request(self, user_message: str) -> list[dict[str, str]]:
        """The messages to send for a new turn: system prompt, history, the new message."""
        messages = [Message("system", self.system_prompt)] if self.system_prompt else []
        return [m.as_json() for m in [*messages, *self._history, Message("user", user_message)]]

    def add_turn(self, user_message: str, reply: str) -> None:
        self._history.extend((Message("user", user_message), Message("assistant", reply)))
        while self._history and (
            len(self._history) > self.max_messages
            or sum(len(m.content) for m in self._history) > self.max_chars
        ):
            self._history.popleft()
        # Never start with a reply whose question was dropped.
        while self._history and self._history[0].role != "user":
            self._history.popleft()

    def clear(self) -> None:
        self._history.clear()
