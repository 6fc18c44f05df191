"""Cutting a reply that arrives in pieces into sentences, each as soon as it is complete.

A sentence ends at `.`, `!`, `?` or `…` (with any closing quotes or brackets after it)
followed by whitespace, or at a line break; a full stop after a common abbreviation or
a single letter ("Dr.", "e.g.", "J.") ends none. A sentence longer than `max_chars`
is cut at its last comma, semicolon or space before that, so that speech never waits
on a run-on reply.
"""

from __future__ import annotations

import re

DEFAULT_MAX_CHARS = 300
# Lower-cased words before a full stop that does not end a sentence.
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e a.m p.m no fig approx dept est inc ltd co".split()
)
_END = re.compile(r"([.!?…]+)([\"'”’)\]]*)(\s+)|\n\s*")
_SOFT_BREAK = re.compile(r"[,;:]\s|\s")


class SentenceSplitter:
    """Feed text pieces in; complete sentences come out, in order."""

    def __init__(self, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        self._buffer = ""
        self.max_chars = max_chars

    def feed(self, text: str) -> list[str]:
        """The sentences `text` completes (possibly none)."""
        self._buffer += text
        sentences = []
        while True:
            cut = self._next_end()
            if cut is None:
                break
            sentence, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
            if sentence:
                sentences.append(sentence)
        return sentences

    def flush(self) -> list[str]:
        """What is left once the reply ended."""
        rest, self._buffer = self._buffer.strip(), ""
        return [rest] if rest else []

    def _next_end(self) -> int | None:
        for match in _END.finditer(self._buffer):
            if match.group(1) == "." and _is_abbreviation(self._buffer[: match.start()]):
                continue
            if match.start() > self.max_chars:
                break
            return match.end()
        if len(self._buffer) > self.max_chars:
            window = self._buffer[: self.max_chars]
            breaks = [m.end() for m in _SOFT_BREAK.finditer(window)]
            return breaks[-1] if breaks else self.max_chars
        return None


def _is_abbreviation(before: str) -> bool:
    word = before.rsplit(None, 1)[-1] if before.strip() else ""
    word = word.lstrip("(\"'“‘").lower()
    return len(word) == 1 and word.isalpha() or word in ABBREVIATIONS


def split_sentences(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """All of `text`'s sentences at once."""
    splitter = SentenceSplitter(max_chars)
    return splitter.feed(text) + splitter.flush()
