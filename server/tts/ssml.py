"""SSML and other markup out of text to speak: tags are removed, never spoken.

One rule for every backend (rather than espeak-ng's own SSML mode for one of them), so
that the same request sounds alike on each: elements are dropped with their tags,
keeping their text, except that `<sub alias="…">` speaks its alias, and a `<break>`
or the end of a `<p>` or `<s>` becomes a comma or full stop so that it still pauses.
Text that merely contains `<` (`3 < 5`) is left alone.
"""

from __future__ import annotations

import html
import re

# A tag: `<name …>`, `</name>`, `<name/>`, also `<?xml …?>`, `<!-- … -->`, `<!DOCTYPE …>`.
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_DECLARATION = re.compile(r"<[?!][^<>]*>")
_SUB = re.compile(
    r"<sub\b[^<>]*?\balias\s*=\s*(\"[^\"]*\"|'[^']*')[^<>]*>.*?</sub\s*>", re.DOTALL | re.IGNORECASE
)
_BREAK = re.compile(r"<break\b[^<>]*>", re.IGNORECASE)
_BLOCK_END = re.compile(r"</(p|s|paragraph|sentence)\s*>", re.IGNORECASE)
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9:_.\-]*(\s[^<>]*)?/?>")
_SPACE = re.compile(r"\s+")
_SPACE_BEFORE_MARK = re.compile(r"\s+([,.;:!?])")
_REPEATED_MARK = re.compile(r"([,.;:!?])(?:\s*[,.])+")


def has_markup(text: str) -> bool:
    """Whether `text` contains anything `speakable_text` would remove."""
    return bool(_TAG.search(text) or _COMMENT.search(text) or _DECLARATION.search(text))


def speakable_text(text: str) -> str:
    """`text` with markup removed and whitespace collapsed: what a backend is given."""
    if has_markup(text):
        text = _COMMENT.sub(" ", text)
        text = _DECLARATION.sub(" ", text)
        text = _SUB.sub(lambda m: " " + m.group(1)[1:-1] + " ", text)
        text = _BREAK.sub(", ", text)
        text = _BLOCK_END.sub(". ", text)
        text = _TAG.sub(" ", text)
        text = html.unescape(text)
        text = _SPACE_BEFORE_MARK.sub(r"\1", _SPACE.sub(" ", text))
        text = _REPEATED_MARK.sub(r"\1", text)
        text = text.strip().lstrip(",.;: ")
    return _SPACE.sub(" ", text).strip()
