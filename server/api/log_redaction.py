"""Session tokens never reach a log: uvicorn's access log prints each request's query
string, and a player_url carries its session's token there."""

from __future__ import annotations

import logging
import re

from server.api.access import SESSION_TOKEN_QUERY

REDACTED = "[redacted]"
TOKEN_IN_QUERY = re.compile(rf"([?&]{SESSION_TOKEN_QUERY}=)[^&\s\"']*", re.IGNORECASE)
# uvicorn's loggers that can print a request's target.
REQUEST_LOGGERS = ("uvicorn.access", "uvicorn.error")


def redact(text: str) -> str:
    return TOKEN_IN_QUERY.sub(rf"\g<1>{REDACTED}", text)


class TokenRedactingFilter(logging.Filter):
    """Rewrites a record's message and arguments with every `token=` value redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def install_token_redaction() -> None:
    """Idempotent: one filter on each of uvicorn's request loggers."""
    for name in REQUEST_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, TokenRedactingFilter) for f in target.filters):
            target.addFilter(TokenRedactingFilter())
