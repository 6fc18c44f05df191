"""Settings come from the environment, with clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import DEFAULT_STUN_URLS, Settings, SettingsError


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.audio_prebuffer_seconds == 0.2
    assert settings.audio_max_lead_seconds == 0.08
    assert settings.audio_max_lag_seconds == 0.12
    assert settings.stun_urls == DEFAULT_STUN_URLS
    assert settings.lipsync_engine == "auto"
    assert settings.models_dir == Path("models")


def test_empty_stun_list_means_no_stun_and_turn_carries_credentials() -> None:
    settings = Settings.from_env(
        {
            "WEBRTC_STUN_URLS": "",
            "WEBRTC_TURN_URLS": "turn:turn.example.org:3478?transport=udp, turns:turn.example.org:5349",
            "WEBRTC_TURN_USER": "alice",
            "WEBRTC_TURN_PASS": "secret",
        }
    )
    assert settings.ice_servers() == [
        {
            "urls": ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"],
            "username": "alice",
            "credential": "secret",
        }
    ]


def test_numbers_and_lists_are_parsed() -> None:
    settings = Settings.from_env(
        {
            "WEBRTC_AUDIO_PREBUFFER_SECONDS": "0.35",
            "MAX_SESSIONS": "3",
            "WEBRTC_ICE_HOST_ADDRESSES": "127.0.0.1,10.0.0.2",
            "MODELS_DIR": "/srv/models",
        }
    )
    assert settings.audio_prebuffer_seconds == 0.35
    assert settings.max_sessions == 3
    assert settings.ice_host_addresses == ("127.0.0.1", "10.0.0.2")
    assert settings.models_dir == Path("/srv/models")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MAX_SESSIONS", "many", "MAX_SESSIONS='many' is not a valid int"),
        ("MAX_SESSIONS", "-1", "MAX_SESSIONS must not be negative"),
        ("WEBRTC_AUDIO_MAX_LEAD_SECONDS", "-1", "WEBRTC_AUDIO_MAX_LEAD_SECONDS must be between"),
        ("LIPSYNC_ENGINE", "wav2lip", "LIPSYNC_ENGINE must be one of"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({name: value})


def test_avatar_limits_are_read_and_checked() -> None:
    settings = Settings.from_env({"AVATAR_MIN_VIDEO_SECONDS": "0", "AVATAR_MAX_FRAME_SIDE": "1280"})
    assert (settings.avatar_min_video_seconds, settings.avatar_max_frame_side) == (0.0, 1280)
    assert settings.avatar_max_video_seconds == 60.0 and settings.avatar_max_faceless_share == 0.1
    with pytest.raises(SettingsError, match="AVATAR_MIN_VIDEO_SECONDS must be between 0 and AVATAR_MAX"):
        Settings.from_env({"AVATAR_MIN_VIDEO_SECONDS": "90"})
    with pytest.raises(SettingsError, match="AVATAR_MAX_FACELESS_SHARE"):
        Settings.from_env({"AVATAR_MAX_FACELESS_SHARE": "1"})


def test_text_and_chat_settings() -> None:
    settings = Settings.from_env(
        {
            "TTS_ENGINE": "openai",
            "TTS_OPENAI_URL": "http://127.0.0.1:8880/v1",
            "TTS_OPENAI_FORMAT": "wav",
            "LLM_URL": "http://127.0.0.1:11434/v1",
            "LLM_MODEL": "llama3.2",
            "CHAT_HISTORY_MESSAGES": "6",
        }
    )
    assert settings.tts_engine == "openai" and settings.tts_openai_format == "wav"
    assert settings.llm_model == "llama3.2" and settings.chat_history_messages == 6
    defaults = Settings.from_env({"MODELS_DIR": "/srv/models"})
    assert defaults.tts_engine == "espeak" and defaults.tts_max_chars == 1000
    assert defaults.tts_voices_path == Path("/srv/models/tts")
    assert Settings.from_env({"TTS_VOICES_DIR": "/voices"}).tts_voices_path == Path("/voices")


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("TTS_ENGINE", "festival", "TTS_ENGINE must be one of espeak, piper, openai"),
        ("TTS_OPENAI_FORMAT", "flac", "TTS_OPENAI_FORMAT must be pcm, mp3, opus or wav"),
        ("CHAT_HISTORY_MESSAGES", "0", "CHAT_HISTORY_MESSAGES must be at least 1"),
        ("LLM_TIMEOUT_SECONDS", "0", "LLM_TIMEOUT_SECONDS must be positive"),
    ],
)
def test_unusable_text_and_chat_settings_are_named(name: str, value: str, words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        Settings.from_env({name: value})


def test_log_format_is_text_or_json() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(SettingsError, match="LOG_FORMAT must be one of text, json"):
        Settings.from_env({"LOG_FORMAT": "xml"})


def test_queue_and_event_settings_are_read_and_checked() -> None:
    settings = Settings.from_env(
        {"MAX_QUEUED_UTTERANCES": "3", "EVENTS_LISTENER_BACKLOG": "10", "EVENTS_HEARTBEAT_SECONDS": "5"}
    )
    assert (settings.max_queued_utterances, settings.events_listener_backlog) == (3, 10)
    assert settings.events_heartbeat_seconds == 5.0
    with pytest.raises(SettingsError, match="MAX_QUEUED_UTTERANCES must not be negative"):
        Settings.from_env({"MAX_QUEUED_UTTERANCES": "-1"})
    with pytest.raises(SettingsError, match="EVENTS_HEARTBEAT_SECONDS must be positive"):
        Settings.from_env({"EVENTS_HEARTBEAT_SECONDS": "0"})


def test_connection_and_client_limits_are_read_and_checked() -> None:
    settings = Settings.from_env(
        {"SESSION_CONNECT_TIMEOUT_SECONDS": "5", "FORWARDED_ALLOW_IPS": "10.0.0.1, 10.0.0.2",
         "RATE_LIMIT_CREATE_BURST": "0"}
    )
    assert settings.session_connect_timeout_seconds == 5.0
    assert settings.forwarded_allow_ips == ("10.0.0.1", "10.0.0.2")
    assert settings.create_burst == 0
    assert Settings.from_env({}).webrtc_connect_timeout_seconds == 30.0
    with pytest.raises(SettingsError, match="WEBRTC_CONNECT_TIMEOUT_SECONDS must be positive"):
        Settings.from_env({"WEBRTC_CONNECT_TIMEOUT_SECONDS": "0"})
    with pytest.raises(SettingsError, match="RATE_LIMIT_UPLOAD_PER_MINUTE must not be negative"):
        Settings.from_env({"RATE_LIMIT_UPLOAD_PER_MINUTE": "-1"})
    with pytest.raises(SettingsError, match="MAX_OFFER_BYTES must be at least 1"):
        Settings.from_env({"MAX_OFFER_BYTES": "0"})
