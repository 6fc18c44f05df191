"""The deployment (docker-compose.yml, deploy/, Dockerfile) holds together: one shared
TURN secret from the environment, the server's TURN URLs at coturn's port, coturn relaying
only to the server, the server behind Caddy, the image running as a non-root user."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from server.settings import Settings
from tests.deployment import (
    CADDYFILE,
    COMPOSE_FILE,
    DOCKERFILE,
    ROOT,
    env_file,
    options,
    service,
    variables,
)

# A filled-in .env, as an operator writes it from deploy/example.env.
FILLED_ENV = {
    **env_file(),
    "PUBLIC_HOST": "avatar.example.org",
    "SERVER_IP": "203.0.113.10",
    "TURN_SECRET": "0123456789abcdef0123456789abcdef",
    "API_KEYS": "key-one,key-two",
}
# Settings another branch adds (API keys); the server reads them once it is merged.
SETTINGS_OF_OTHER_BRANCHES = {"API_KEYS"}
PRIVATE_RANGES = (
    "10.0.0.0-10.255.255.255",
    "172.16.0.0-172.31.255.255",
    "192.168.0.0-192.168.255.255",
    "169.254.0.0-169.254.255.255",  # link-local: the clouds' metadata services
)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def coturn_options(environment: dict[str, str] | None = None) -> dict[str, list[str]]:
    return options(service("coturn", environment)["command"])


def test_the_image_runs_as_a_non_root_user_created_in_it() -> None:
    instructions = dockerfile_instructions()
    users = [i for i, (name, _) in enumerate(instructions) if name == "USER"]
    assert users, "the Dockerfile sets no USER: the server would run as root"
    last_user = instructions[users[-1]][1]
    assert last_user not in ("root", "0") and not last_user.startswith("0:")
    after = [name for name, _ in instructions[users[-1] + 1 :]]
    assert "RUN" not in after and "CMD" in after  # the user the server runs as
    commands = [
        command.split()
        for name, args in instructions[: users[-1]]
        if name == "RUN"
        for command in args.split("&&")
    ]
    assert any(words[0] == "useradd" and words[-1] == last_user for words in commands)


def test_the_images_user_owns_the_avatars_folder() -> None:
    runs = " ".join(args for name, args in dockerfile_instructions() if name == "RUN")
    assert 'chown avatar:avatar "$AVATARS_DIR"' in runs


def test_the_server_and_coturn_share_one_turn_secret_from_the_environment() -> None:
    server = service("avatar-server")["environment"]
    coturn = coturn_options()
    assert variables(server["WEBRTC_TURN_SECRET"]) == {"TURN_SECRET"}
    assert variables(coturn["static-auth-secret"][0]) == {"TURN_SECRET"}
    assert "use-auth-secret" in coturn

    filled_server = service("avatar-server", FILLED_ENV)["environment"]
    filled_coturn = coturn_options(FILLED_ENV)
    assert filled_server["WEBRTC_TURN_SECRET"] == FILLED_ENV["TURN_SECRET"]
    assert filled_coturn["static-auth-secret"] == [FILLED_ENV["TURN_SECRET"]]


def test_no_secret_is_written_in_the_deployment_files() -> None:
    server = service("avatar-server")["environment"]
    for name in ("WEBRTC_TURN_SECRET", "API_KEYS"):
        assert server[name].startswith("${") and server[name].endswith("}"), name
    example = env_file()
    assert example["TURN_SECRET"] == "" and example["API_KEYS"] == ""
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_the_servers_stun_and_turn_urls_are_coturns_address_and_port() -> None:
    server = service("avatar-server", FILLED_ENV)["environment"]
    (port,) = coturn_options(FILLED_ENV)["listening-port"]
    urls = [*server["WEBRTC_TURN_REST_URLS"].split(","), *server["WEBRTC_STUN_URLS"].split(",")]
    for url in urls:
        scheme, address = url.split(":", 1)
        host, _, rest = address.partition(":")
        assert scheme in ("turn", "stun")
        assert host == FILLED_ENV["PUBLIC_HOST"]
        assert rest.split("?")[0] == port
    transports = {urlsplit(url).query for url in server["WEBRTC_TURN_REST_URLS"].split(",")}
    assert transports == {"transport=udp", "transport=tcp"}


def test_coturn_relays_to_the_servers_address_and_not_into_private_networks() -> None:
    coturn = coturn_options(FILLED_ENV)
    server = service("avatar-server", FILLED_ENV)["environment"]
    assert coturn["allowed-peer-ip"] == [FILLED_ENV["SERVER_IP"]]
    assert server["WEBRTC_ICE_HOST_ADDRESSES"] == FILLED_ENV["SERVER_IP"]
    for denied in PRIVATE_RANGES:
        assert denied in coturn["denied-peer-ip"]
    assert "allow-loopback-peers" not in coturn
    assert "no-multicast-peers" in coturn
    assert "no-cli" in coturn


def test_the_relay_port_range_is_the_one_the_readme_and_compose_file_tell_operators() -> None:
    coturn = coturn_options()
    ports = f"{coturn['min-port'][0]}-{coturn['max-port'][0]}"
    assert f"{ports}/udp" in COMPOSE_FILE.read_text()
    readme = (ROOT / "README.md").read_text()
    assert f"{ports}/udp" in readme


def test_the_server_listens_on_loopback_only_and_caddy_proxies_to_it() -> None:
    server = service("avatar-server")
    command = server["command"]
    host = command[command.index("--host") + 1]
    port = command[command.index("--port") + 1]
    assert host == "127.0.0.1"
    assert f"reverse_proxy {host}:{port}" in CADDYFILE.read_text()
    for name in ("avatar-server", "coturn", "caddy"):
        assert service(name)["network_mode"] == "host", name


def test_the_servers_environment_is_valid_settings_that_mint_turn_credentials() -> None:
    environment = service("avatar-server", FILLED_ENV)["environment"]
    known = {f.metadata["env"] for f in dataclasses.fields(Settings) if "env" in f.metadata}
    assert set(environment) - known <= SETTINGS_OF_OTHER_BRANCHES

    settings = Settings.from_env(environment)
    assert settings.turn_secret == FILLED_ENV["TURN_SECRET"]
    assert len(settings.turn_rest_urls) == 2
    assert settings.public_url == "https://avatar.example.org"


def docker_compose_config(tmp_path: Path, environment: dict[str, str]) -> subprocess.CompletedProcess:
    env_path = tmp_path / "compose.env"
    env_path.write_text("".join(f"{name}={value}\n" for name, value in environment.items()))
    return subprocess.run(
        ["docker-compose", "--env-file", str(env_path), "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )


needs_docker_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is not installed (Debian: apt-get install docker-compose); "
    "the other tests here read the file themselves",
)


@needs_docker_compose
def test_docker_compose_accepts_the_file_filled_in(tmp_path: Path) -> None:
    result = docker_compose_config(tmp_path, FILLED_ENV)
    assert result.returncode == 0, result.stderr


@needs_docker_compose
def test_docker_compose_refuses_to_start_without_the_shared_secret(tmp_path: Path) -> None:
    result = docker_compose_config(tmp_path, {**FILLED_ENV, "TURN_SECRET": ""})
    assert result.returncode != 0
    assert "set TURN_SECRET in .env" in result.stderr


@pytest.mark.skipif(
    shutil.which("caddy") is None,
    reason="caddy is not installed (Debian: apt-get install caddy); "
    "the other tests here read the Caddyfile themselves",
)
def test_caddy_reads_the_caddyfile_as_a_proxy_of_the_public_host_to_the_server() -> None:
    result = subprocess.run(
        ["caddy", "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": os.environ["PATH"], "PUBLIC_HOST": FILLED_ENV["PUBLIC_HOST"]},
    )
    assert result.returncode == 0, result.stderr
    (server,) = json.loads(result.stdout)["apps"]["http"]["servers"].values()
    (route,) = server["routes"]
    assert route["match"] == [{"host": [FILLED_ENV["PUBLIC_HOST"]]}]
    assert '"dial":"127.0.0.1:8000"' in result.stdout.replace(" ", "")
