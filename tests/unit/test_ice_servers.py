"""A session's ICE servers: TURN REST credentials minted from the shared secret, kept for
the session, renewed near their expiry, next to the configured STUN and static TURN."""

from __future__ import annotations

import pytest

from server.media.ice_servers import SessionIceServers, turn_rest_credential
from server.settings import Settings, SettingsError

SECRET = "north-wind-shared-secret"
SESSION_ID = "Hc3dq1_Zx-9aLk2PwQe7"
EXPIRES_AT = 1764633600  # 2025-12-02 00:00:00 UTC
# Computed outside Python, as coturn's documentation does it:
#   printf '%s' "1764633600:Hc3dq1_Zx-9aLk2PwQe7" \
#     | openssl dgst -sha1 -hmac "north-wind-shared-secret" -binary | base64
EXPECTED_PASSWORD = "rDIP4uLJQA5oSwfJN3EBLdqMScU="

TURN_REST_URLS = "turn:turn.example.org:3478?transport=udp,turn:turn.example.org:3478?transport=tcp"
DAY = 24 * 3600.0


class FakeClock:
    """Unix time that moves only when the test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def minting_settings(**environment: str) -> Settings:
    return Settings.from_env(
        {
            "WEBRTC_STUN_URLS": "",
            "WEBRTC_TURN_REST_URLS": TURN_REST_URLS,
            "WEBRTC_TURN_SECRET": SECRET,
            **environment,
        }
    )


def test_the_password_is_the_base64_hmac_sha1_of_the_username_keyed_with_the_secret() -> None:
    credential = turn_rest_credential(SECRET, SESSION_ID, EXPIRES_AT)
    assert credential.password == EXPECTED_PASSWORD


def test_the_username_is_the_expiry_in_unix_time_then_the_session_id() -> None:
    credential = turn_rest_credential(SECRET, SESSION_ID, EXPIRES_AT)
    assert credential.username == "1764633600:Hc3dq1_Zx-9aLk2PwQe7"
    assert credential.expires_at == EXPIRES_AT


def test_a_session_id_with_the_username_separator_is_refused() -> None:
    with pytest.raises(ValueError, match="':'"):
        turn_rest_credential(SECRET, "a:b", EXPIRES_AT)


def test_a_session_gets_credentials_for_the_rest_urls_valid_for_the_configured_ttl() -> None:
    clock = FakeClock(1_800_000_000.4)
    servers = SessionIceServers(
        minting_settings(WEBRTC_TURN_CREDENTIAL_TTL_SECONDS="3600"), SESSION_ID, clock
    )

    (entry,) = servers.current()
    expected = turn_rest_credential(SECRET, SESSION_ID, 1_800_003_600)
    assert entry == {
        "urls": TURN_REST_URLS.split(","),
        "username": "1800003600:" + SESSION_ID,
        "credential": expected.password,
    }


def test_by_default_the_credentials_are_valid_for_a_day() -> None:
    clock = FakeClock(1_800_000_000)
    credential = SessionIceServers(minting_settings(), SESSION_ID, clock).credential
    assert credential is not None
    assert credential.expires_at == 1_800_000_000 + DAY


def test_a_session_keeps_its_credentials_while_they_are_far_from_expiry() -> None:
    clock = FakeClock(1_800_000_000)
    servers = SessionIceServers(minting_settings(), SESSION_ID, clock)
    first = servers.current()

    clock.now += DAY - 601  # 10 minutes and a second before they expire
    assert servers.current() == first


def test_credentials_near_their_expiry_are_replaced_by_later_ones() -> None:
    clock = FakeClock(1_800_000_000)
    servers = SessionIceServers(minting_settings(), SESSION_ID, clock)
    first = servers.credential

    clock.now += DAY - 599  # less than 10 minutes left: a connection made now would outlive them
    renewed = servers.credential
    assert first is not None and renewed is not None
    assert renewed.expires_at == int(clock.now + DAY)
    assert renewed.password != first.password


def test_expired_credentials_are_replaced_when_next_asked_for() -> None:
    clock = FakeClock(1_800_000_000)
    settings = minting_settings(WEBRTC_TURN_CREDENTIAL_TTL_SECONDS="60")
    servers = SessionIceServers(settings, SESSION_ID, clock)
    first = servers.credential

    clock.now += 29  # a short lifetime keeps at least half of it
    assert servers.credential == first
    clock.now += 120
    renewed = servers.credential
    assert renewed is not None and first is not None
    assert renewed.expires_at == 1_800_000_000 + 149 + 60


def test_each_session_gets_its_own_credentials() -> None:
    clock = FakeClock(1_800_000_000)
    settings = minting_settings()
    one = SessionIceServers(settings, "session-one", clock).current()
    other = SessionIceServers(settings, "session-two", clock).current()
    assert one[0]["username"] == "1800086400:session-one"
    assert other[0]["username"] == "1800086400:session-two"
    assert one[0]["credential"] != other[0]["credential"]


def test_the_minted_entry_comes_after_stun_and_before_the_static_turn_servers() -> None:
    settings = minting_settings(
        WEBRTC_STUN_URLS="stun:stun.example.org:3478",
        WEBRTC_TURN_URLS="turns:relay.example.net:443?transport=tcp",
        WEBRTC_TURN_USER="alice",
        WEBRTC_TURN_PASS="static-password",
    )
    servers = SessionIceServers(settings, SESSION_ID, FakeClock(1_800_000_000)).current()

    assert [entry["urls"] for entry in servers] == [
        ["stun:stun.example.org:3478"],
        TURN_REST_URLS.split(","),
        ["turns:relay.example.net:443?transport=tcp"],
    ]
    assert servers[1]["username"] == "1800086400:" + SESSION_ID
    assert (servers[2]["username"], servers[2]["credential"]) == ("alice", "static-password")


def test_without_a_secret_a_session_gets_the_configured_servers_only() -> None:
    settings = Settings.from_env(
        {
            "WEBRTC_STUN_URLS": "stun:stun.example.org:3478",
            "WEBRTC_TURN_URLS": "turn:relay.example.net:3478",
            "WEBRTC_TURN_USER": "alice",
            "WEBRTC_TURN_PASS": "static-password",
        }
    )
    servers = SessionIceServers(settings, SESSION_ID)
    assert servers.credential is None
    assert servers.current() == settings.ice_servers()


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"WEBRTC_TURN_REST_URLS": TURN_REST_URLS}, "WEBRTC_TURN_REST_URLS needs WEBRTC_TURN_SECRET"),
        ({"WEBRTC_TURN_SECRET": SECRET}, "WEBRTC_TURN_SECRET needs WEBRTC_TURN_REST_URLS"),
        (
            {
                "WEBRTC_TURN_REST_URLS": TURN_REST_URLS,
                "WEBRTC_TURN_SECRET": SECRET,
                "WEBRTC_TURN_CREDENTIAL_TTL_SECONDS": "10",
            },
            "WEBRTC_TURN_CREDENTIAL_TTL_SECONDS must be at least 60 seconds",
        ),
    ],
)
def test_incomplete_turn_rest_settings_are_refused(
    environment: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(environment)


def test_the_shared_secret_is_not_in_the_settings_repr() -> None:
    assert SECRET not in repr(minting_settings())
