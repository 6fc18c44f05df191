"""Ids minted by a node behind a reverse proxy name the node, before the first dot."""

from __future__ import annotations

import re
import secrets

import pytest

from server.node_ids import node_of, node_scoped
from server.renders.jobs import FILE_PATTERN
from server.settings import Settings, SettingsError

URL_SAFE = re.compile(r"[A-Za-z0-9._-]+")


def test_an_id_minted_with_a_node_id_names_the_node_and_stays_url_safe() -> None:
    for _ in range(1000):
        minted = node_scoped("node2", secrets.token_urlsafe(12))
        assert URL_SAFE.fullmatch(minted)
        assert node_of(minted) == "node2"


def test_an_id_minted_without_a_node_id_is_the_random_part_alone() -> None:
    random_part = secrets.token_urlsafe(12)
    assert node_scoped("", random_part) == random_part
    assert node_of(random_part) == ""


@pytest.mark.parametrize("node_id", ["Node", "a-b", "a.b", "x" * 17, "ü"])
def test_a_node_id_a_proxy_could_not_match_is_refused(node_id: str) -> None:
    with pytest.raises(SettingsError, match="NODE_ID"):
        Settings(node_id=node_id)


def test_node_id_is_read_from_the_environment() -> None:
    assert Settings.from_env({"NODE_ID": "b7"}).node_id == "b7"


def test_a_nodes_render_files_are_among_those_a_restart_removes() -> None:
    render_id = node_scoped("a", "r" + secrets.token_hex(8))
    assert FILE_PATTERN.match(f"{render_id}.mp4")
    assert FILE_PATTERN.match(f"{render_id}.mp4.part")
    assert not FILE_PATTERN.match(f"{render_id}.mp4.bak")
    assert not FILE_PATTERN.match("avatar.json")
