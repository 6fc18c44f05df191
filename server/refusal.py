"""`Refusal`: the one base of every error a client is answered with, and how."""

from __future__ import annotations

from typing import Any


class Refusal(Exception):
    """A request the server refuses: `status` is the HTTP status, `message` a sentence the
    user can act on, `extra` further fields of the JSON body, `headers` of the response."""

    status = 400

    def __init__(self, message: str, status: int | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra
        self.headers: dict[str, str] = {}
        if status is not None:
            self.status = status
