"""API keys from the environment and a file, and when `serve` refuses to start open."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.api.access import check_exposure, load_api_keys
from server.api.hosts import host_name
from server.settings import Settings, SettingsError

KEY = "env-key-0123456789abcdef"


def test_keys_come_from_api_keys_and_the_lines_of_the_keys_file(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(
        "# one key a line\nfile-key-0123456789abcdef  # the phone app\n\n  second-file-key-0123456789\n"
    )
    settings = Settings.from_env({"API_KEYS": f"{KEY}, {KEY}", "API_KEYS_FILE": str(keys_file)})
    assert load_api_keys(settings) == (KEY, "file-key-0123456789abcdef", "second-file-key-0123456789")


def test_keys_never_show_in_the_settings_repr() -> None:
    assert KEY not in repr(Settings.from_env({"API_KEYS": KEY}))


def test_a_short_key_is_refused_with_how_to_make_one() -> None:
    with pytest.raises(SettingsError, match="at least 16 characters.*token_urlsafe"):
        load_api_keys(Settings.from_env({"API_KEYS": "short"}))


def test_a_missing_keys_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="API_KEYS_FILE"):
        load_api_keys(Settings.from_env({"API_KEYS_FILE": str(tmp_path / "none")}))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_without_keys_is_allowed(host: str) -> None:
    check_exposure(Settings(host=host), ())


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5"])
def test_beyond_loopback_without_keys_is_refused_unless_allowed_open(host: str) -> None:
    with pytest.raises(SettingsError, match="API_KEYS.*ALLOW_OPEN_ACCESS=1"):
        check_exposure(Settings(host=host), ())
    check_exposure(Settings(host=host), (KEY,))
    check_exposure(Settings.from_env({"ALLOW_OPEN_ACCESS": "1"}, host=host), ())


@pytest.mark.parametrize(
    ("header", "name"),
    [("Example.org:8000", "example.org"), ("[::1]:8000", "::1"), ("::1", "::1"), ("example.org.", "example.org")],
)
def test_host_names_are_read_without_port_or_case(header: str, name: str) -> None:
    assert host_name(header) == name
