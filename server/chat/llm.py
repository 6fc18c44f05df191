"""An OpenAI-compatible chat completions service, streamed: `POST {LLM_URL}/chat/completions`.

The answer is read as server-sent events (`data: {chat.completion.chunk}` lines, ending
with `data: [DONE]`); a service that ignores `stream` and answers one JSON
`chat.completion` is read too. Everything else it might answer is a 502 with a sentence.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from server.refusal import Refusal

logger = logging.getLogger(__name__)

DONE = "[DONE]"
ERROR_BODY_CHARS = 300
MAX_LINE_CHARS = 1_000_000


class LlmUnavailableError(Refusal):
    status = 503


class LlmError(Refusal):
    """The LLM service failed: unreachable, timed out, an error status, or nonsense."""

    status = 502


class ChatCompletions:
    """A client of one chat completions endpoint (URL, key, model from the settings)."""

    def __init__(self, url: str, key: str, model: str, timeout_seconds: float) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.timeout_seconds = timeout_seconds
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout_seconds)

    def unavailable_reason(self) -> str | None:
        if not self.url or not self.model:
            return (
                "Chat needs an LLM: set LLM_URL (an OpenAI-compatible base URL such as "
                "http://127.0.0.1:11434/v1) and LLM_MODEL, then restart the server."
            )
        return None

    def check_available(self) -> None:
        reason = self.unavailable_reason()
        if reason is not None:
            raise LlmUnavailableError(reason)

    async def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        """The reply's text, piece by piece as the service sends it."""
        self.check_available()
        endpoint = f"{self.url}/chat/completions"
        body = {"model": self.model, "messages": messages, "stream": True}
        try:
            async with self._client.stream("POST", endpoint, json=body) as response:
                if response.status_code != 200:
                    detail = (await response.aread()).decode("utf-8", "replace")[:ERROR_BODY_CHARS]
                    raise LlmError(
                        f"The LLM at {self.url} answered {response.status_code}: "
                        f"{detail.strip() or 'no message'}."
                    )
                if response.headers.get("content-type", "").startswith("application/json"):
                    yield _message_content(_json(await response.aread()))
                    return
                async for piece in _stream_content(response):
                    yield piece
        except httpx.TimeoutException:
            raise LlmError(
                f"The LLM at {self.url} sent nothing for {self.timeout_seconds:g} s "
                "(LLM_TIMEOUT_SECONDS)."
            ) from None
        except httpx.HTTPError as error:
            raise LlmError(f"The LLM at {self.url} could not be reached: {error}.") from None

    async def close(self) -> None:
        await self._client.aclose()


async def _stream_content(response: httpx.Response) -> AsyncIterator[str]:
    seen_data = False
    async for line in response.aiter_lines():
        if len(line) > MAX_LINE_CHARS:
            raise LlmError("The LLM sent a stream line longer than a chat completion chunk can be.")
        if not line.startswith("data:"):
            continue  # blank separators, comments, event:/id: lines
        payload = line[5:].strip()
        if payload == DONE:
            return
        seen_data = True
        content = _chunk_content(_json(payload))
        if content:
            yield content
    if not seen_data:
        raise LlmError(
            "The LLM's answer was not a chat completions stream (no `data:` lines); check LLM_URL."
        )


def _json(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        shown = (text.decode("utf-8", "replace") if isinstance(text, bytes) else text)[:80]
        raise LlmError(f"The LLM answered something that is not JSON: {shown!r}.") from None


def _error_of(value: Any) -> None:
    if isinstance(value, dict) and "error" in value:
        error = value["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise LlmError(f"The LLM reported an error: {str(message)[:ERROR_BODY_CHARS]}.")


def _chunk_content(chunk: Any) -> str:
    """The text of one chat.completion.chunk (`choices[0].delta.content`)."""
    _error_of(chunk)
    try:
        choices = chunk["choices"]
        if not choices:
            return ""  # e.g. a final usage-only chunk
        content = choices[0].get("delta", {}).get("content")
    except (KeyError, TypeError, AttributeError, IndexError):
        raise LlmError("The LLM sent a chunk that is not a chat.completion.chunk.") from None
    if content is not None and not isinstance(content, str):
        raise LlmError("The LLM sent a chunk whose content is not text.")
    return content or ""


def _message_content(completion: Any) -> str:
    """The text of a whole chat.completion (`choices[0].message.content`)."""
    _error_of(completion)
    try:
        content = completion["choices"][0]["message"]["content"]
    except (KeyError, TypeError, IndexError):
        raise LlmError("The LLM's answer is not a chat completion.") from None
    if not isinstance(content, str):
        raise LlmError("The LLM's answer has no text.")
    return content
