"""The OpenAPI description holds for whatever schemathesis makes of it, on a live server.

Schemathesis generates valid and invalid requests for every operation (stateless) and
sequences of calls that follow the description's links (stateful: create a session, then
offer, trickle, stream, look up, delete it; prepare an avatar, then follow or delete it).
The server runs in its own process, so that a crash is seen. Every answer must be
documented for its operation (status, content type, body shape, headers), and none may
be a server error.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ensure_resource_availability,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    use_after_free,
)

from server.app import create_app
from tests.conftest import make_settings
from tests.fuzz.tally import Tally
from tests.server_process import ROOT, ServerProcess

pytestmark = [pytest.mark.fuzz, pytest.mark.webrtc]

# Fixed so that every run sends the same requests: a failure in CI reproduces locally.
SEED = 20_261_201
STATELESS_EXAMPLES = 40  # per operation and generation mode
STATEFUL_SCENARIOS = 40
STATEFUL_STEPS = 8
REQUEST_TIMEOUT_SECONDS = 15.0

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {"mode": "all", "max-examples": STATELESS_EXAMPLES, "deterministic": True},
        # Only the links the description declares: inferred ones (an avatar's id into
        # `create`) would make `create` reachable only after a successful preparation.
        "phases": {"stateful": {"inference": {"algorithms": []}}},
    }
)
# WHEP's bodies are SDP text (server/api/whep.py).
schemathesis.serializer.alias(["application/sdp", "application/trickle-ice-sdpfrag"], "text/plain")
SCHEMA = schemathesis.openapi.from_dict(create_app(make_settings()).openapi(), config=CONFIG)

CONFORMANCE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
STATEFUL_CHECKS = [*CONFORMANCE_CHECKS, use_after_free, ensure_resource_availability]

HYPOTHESIS_SETTINGS = {
    "derandomize": True,
    "database": None,
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
}

# Sessions are never connected here, so they are cheap: the limit (and the capacity
# budget) is set beyond what the run creates, so that every 5xx is a defect (the 503 at the
# limit and at capacity have tests of their own).
SERVER_ENVIRONMENT = {
    "MAX_SESSIONS": "10000",
    "CAPACITY_ENCODE_FRAMES_PER_SECOND": "10000000",
    "CAPACITY_RENDER_FRAMES_PER_SECOND": "10000000",
    "MAX_UPLOAD_BYTES": "1000000",
    "MAX_AUDIO_SECONDS": "3",
    "AVATAR_MAX_UPLOAD_BYTES": "1000000",
    # Every case comes from one address, far faster than a client would send: the
    # per-client rate limits (tested on their own) would answer most of them 429.
    "RATE_LIMIT_CREATE_PER_MINUTE": "0",
    "RATE_LIMIT_UPLOAD_PER_MINUTE": "0",
}

# Uploads and look-ups go to a session with a client connected, so that the upload is
# really decoded (an unconnected session refuses it at once with 409).
CONNECTED_SESSION_OPERATIONS = {
    "POST /webrtc/sessions/{session_id}/stream",
    "GET /webrtc/sessions/{session_id}",
}
CLIENT_STOP_SECONDS = 30.0

STATELESS = Tally("schemathesis, stateless")
STATEFUL = Tally("schemathesis, stateful")


@pytest.fixture(scope="module")
def contract_server() -> Iterator[ServerProcess]:
    avatars = tempfile.mkdtemp(prefix="avatar-server-contract-")
    server = ServerProcess({**SERVER_ENVIRONMENT, "AVATARS_DIR": avatars}).start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def connected_session(contract_server: ServerProcess) -> Iterator[str]:
    """The id of a session with a real client connected (tests/fuzz/listening_client.py)."""
    client = subprocess.Popen(
        [sys.executable, "-m", "tests.fuzz.listening_client", contract_server.url],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None
        session_id = client.stdout.readline().strip()
        assert session_id, "the client did not connect"
        yield session_id
    finally:
        assert client.stdin is not None
        client.stdin.close()
        try:
            client.wait(CLIENT_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            client.kill()
            client.wait()


def _check_alive(server: ServerProcess) -> None:
    if not server.alive():
        pytest.fail(f"the server died ({server.exit_description()}):\n{server.new_log()[-4000:]}")


@SCHEMA.parametrize()
@hypothesis.settings(**HYPOTHESIS_SETTINGS)
def test_every_answer_is_documented_and_none_is_a_server_error(
    case: schemathesis.Case, contract_server: ServerProcess, connected_session: str
) -> None:
    if case.operation.label in CONNECTED_SESSION_OPERATIONS and "session_id" in case.path_parameters:
        case.path_parameters["session_id"] = connected_session
    response = case.call(base_url=contract_server.url, timeout=REQUEST_TIMEOUT_SECONDS)
    documented = case.method.lower() == case.operation.method.lower()
    STATELESS.record(case.operation.label if documented else "undocumented methods", response.status_code)
    _check_alive(contract_server)
    case.validate_response(response, checks=CONFORMANCE_CHECKS)


def test_call_sequences_along_the_links_keep_to_the_description(
    contract_server: ServerProcess,
) -> None:
    class Machine(SCHEMA.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, object]:
            return {"base_url": contract_server.url, "timeout": REQUEST_TIMEOUT_SECONDS}

        def after_call(self, response: schemathesis.Response, case: schemathesis.Case) -> None:
            super().after_call(response, case)
            STATEFUL.record(f"{case.method} {case.path}", response.status_code)
            _check_alive(contract_server)

        def validate_response(
            self, response: schemathesis.Response, case: schemathesis.Case, **kwargs: object
        ) -> None:
            case.validate_response(
                response,
                checks=STATEFUL_CHECKS,
                transport_kwargs=kwargs or None,
                recorder=self.recorder,
            )

    Machine.run(
        settings=hypothesis.settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=STATEFUL_STEPS,
            **HYPOTHESIS_SETTINGS,
        )
    )
    # The links were followed: sessions were found by the ids `create` answered. Which
    # call gets there first shifts with every operation added, so any of them counts.
    found = [
        (kind, outcome) for (kind, outcome) in STATEFUL.counts
        if "/webrtc/sessions/{session_id}" in kind and outcome != "404"
    ]
    assert found, "no call on a session created in the run found it"
