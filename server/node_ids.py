"""Ids that name the node that minted them, so that a reverse proxy in front of several
nodes can send every later call of a session (or a render) to the node that holds it.

An id is `{NODE_ID}.{random}`, or just the random part when NODE_ID is empty (one node).
The dot never occurs in the random part (`secrets.token_urlsafe`'s alphabet is letters,
digits, `-` and `_`; renders use hex), so the node is everything before the first dot,
and the id stays one URL path segment that needs no escaping.
"""

from __future__ import annotations

import re

NODE_ID_PATTERN = r"[a-z0-9]{1,16}"
"""What NODE_ID may hold: short, lower case, and matched by deploy/nginx's maps."""
SEPARATOR = "."

_NODE_ID = re.compile(NODE_ID_PATTERN)


def valid_node_id(node_id: str) -> bool:
    """Whether `node_id` may be a NODE_ID (empty: a single node, ids without a prefix)."""
    return node_id == "" or _NODE_ID.fullmatch(node_id) is not None


def node_scoped(node_id: str, random_part: str) -> str:
    """The id `random_part` as minted by node `node_id`."""
    return f"{node_id}{SEPARATOR}{random_part}" if node_id else random_part


def node_of(minted_id: str) -> str:
    """The node that minted `minted_id`; empty for an id without a node."""
    node, separator, _ = minted_id.partition(SEPARATOR)
    return node if separator else ""
