"""Shared fixtures: settings safe for tests, and the app running in the test's loop."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from server.app import create_app
from server.settings import Settings

# No STUN or TURN server, and ICE only on loopback: the tests send no packet elsewhere.
TEST_ENVIRONMENT = {
    "WEBRTC_STUN_URLS": "",
    "WEBRTC_TURN_URLS": "",
    "WEBRTC_ICE_HOST_ADDRESSES": "127.0.0.1",
    "LIPSYNC_ENGINE": "demo",
    "ALLOWED_HOSTS": "testserver",  # httpx's ASGI transport's host name
    # The configured costs on a budget of 8 cores, whatever the machine: the same limits
    # everywhere, room for the sessions the tests make, and no calibration per server.
    "CAPACITY_CALIBRATE": "false",
    "CAPACITY_CORES": "8",
}


# One AVATARS_DIR for the whole run, so the demo avatar is prepared once, not per test;
# an empty MODELS_DIR, so weights on this machine change nothing.
TEST_ROOT = Path(tempfile.mkdtemp(prefix="avatar-server-tests-"))
SHARED_AVATARS_DIR = TEST_ROOT / "avatars"
EMPTY_MODELS_DIR = TEST_ROOT / "models"


def make_settings(**overrides: object) -> Settings:
    defaults = {
        "avatars_dir": SHARED_AVATARS_DIR,
        "models_dir": EMPTY_MODELS_DIR,
        # Its own: a server removes the renders it finds in the folder when it starts.
        "renders_dir": Path(tempfile.mkdtemp(dir=TEST_ROOT, prefix="renders-")),
    }
    return Settings.from_env(TEST_ENVIRONMENT, **{**defaults, **overrides})


@pytest.fixture(scope="session", autouse=True)
def _remove_test_root() -> Iterator[None]:
    yield
    shutil.rmtree(TEST_ROOT, ignore_errors=True)


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in this event loop, lifespan included."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(settings) as client:
        yield client


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder in MuseTalk's layout holding tiny random weights (1.5 and 1.0).

    Shared by the whole run: tests that damage files use `models_copy` instead.
    """
    from server.lipsync.musetalk.tiny_weights import write_tiny_weights

    return write_tiny_weights(tmp_path_factory.mktemp("models"))


@pytest.fixture
def models_copy(tiny_models: Path, tmp_path: Path) -> Path:
    """A private copy of `tiny_models`, free to damage."""
    return Path(shutil.copytree(tiny_models, tmp_path / "models"))
