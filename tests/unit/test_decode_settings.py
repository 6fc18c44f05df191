"""The decoding limits: read from the environment, checked, and handed to the pool."""

from __future__ import annotations

import pytest

from server.settings import Settings, SettingsError


def test_decode_limits_have_safe_defaults() -> None:
    settings = Settings.from_env({})
    assert (settings.decode_workers, settings.decode_max_in_flight) == (4, 24)
    assert settings.decode_max_memory_bytes == 1024**3
    assert (settings.decode_cpu_seconds, settings.decode_timeout_seconds) == (10.0, 20.0)
    assert (settings.decode_max_sample_rate, settings.decode_max_channels) == (192_000, 32)


def test_decode_limits_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {"DECODE_WORKERS": "6", "DECODE_MAX_MEMORY_BYTES": "536870912", "DECODE_TIMEOUT_SECONDS": "5"}
    )
    assert settings.decode_workers == 6
    assert settings.decode_max_memory_bytes == 512 * 1024 * 1024
    assert settings.decode_timeout_seconds == 5.0


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DECODE_WORKERS", "0", "DECODE_WORKERS must be at least 1"),
        ("DECODE_MAX_IN_FLIGHT", "0", "DECODE_MAX_IN_FLIGHT must be at least 1"),
        ("DECODE_MAX_MEMORY_BYTES", "1000000", "DECODE_MAX_MEMORY_BYTES must be at least"),
        ("AVATAR_DECODE_MAX_MEMORY_BYTES", "1000000", "AVATAR_DECODE_MAX_MEMORY_BYTES must be at least"),
        ("DECODE_TIMEOUT_SECONDS", "0", "DECODE_TIMEOUT_SECONDS must be positive"),
        ("DECODE_CPU_SECONDS", "-1", "DECODE_CPU_SECONDS must be positive"),
        ("DECODE_MAX_CHANNELS", "0", "DECODE_MAX_CHANNELS must be at least 1"),
    ],
)
def test_bad_decode_limits_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({name: value})
