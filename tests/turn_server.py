"""A real coturn (Debian's `turnserver`) inside the test network namespace, checking TURN
REST credentials against a shared secret as a deployment's coturn does.

It listens and relays on the namespace's peer address only and relays to peers in the
namespace only, so nothing it does can reach beyond the veth pair scripts/netns.sh makes.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from aioice import stun

TURNSERVER = Path("/usr/bin/turnserver")  # scripts/coturn.sh installs it

# scripts/netns.sh gives the veth pair these addresses; coturn takes the peer end.
NETNS_PEER_ADDRESS = "10.203.0.2"
NETNS_NETWORK_RANGE = "10.203.0.0-10.203.0.255"

TURN_PORT = 3478
RELAY_PORTS = (49160, 49260)
REALM = "avatar-server.test"

START_TIMEOUT_SECONDS = 10.0
PROBE_INTERVAL_SECONDS = 0.1


class TurnServer:
    """`turnserver --use-auth-secret` on `NETNS_PEER_ADDRESS` until `stop()`; with
    `arguments`, turnserver run with those instead (e.g. a deployment's), reached at
    `address` and `port`."""

    def __init__(
        self,
        secret: str,
        address: str = NETNS_PEER_ADDRESS,
        port: int = TURN_PORT,
        arguments: list[str] | None = None,
    ) -> None:
        self.secret = secret
        self.address = address
        self.port = port
        self._arguments = arguments
        self._directory = Path(tempfile.mkdtemp(prefix="coturn-"))
        self._log_path = self._directory / "turnserver.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def urls(self) -> list[str]:
        return [f"turn:{self.address}:{self.port}?transport=udp"]

    def command(self) -> list[str]:
        # Its files in a folder of its own, not in the system's /var.
        files = [f"--userdb={self._directory / 'turndb'}",
                 f"--pidfile={self._directory / 'turnserver.pid'}"]
        if self._arguments is not None:
            return [str(TURNSERVER), *self._arguments, *files]
        return [
            str(TURNSERVER),
            "-n",  # no configuration file: only what is given here
            f"--listening-ip={self.address}",
            f"--relay-ip={self.address}",
            f"--listening-port={self.port}",
            f"--min-port={RELAY_PORTS[0]}",
            f"--max-port={RELAY_PORTS[1]}",
            "--use-auth-secret",
            f"--static-auth-secret={self.secret}",
            f"--realm={REALM}",
            "--fingerprint",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--no-multicast-peers",
            # Relay only to the namespace's own addresses, whatever a client asks for.
            "--denied-peer-ip=0.0.0.0-255.255.255.255",
            f"--allowed-peer-ip={NETNS_NETWORK_RANGE}",
            *files,
            "--log-file=stdout",
            "--simple-log",
            "--verbose",
        ]

    def start(self) -> TurnServer:
        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._answers_stun():
            if self._process.poll() is not None:
                raise RuntimeError(f"turnserver exited ({self._process.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"turnserver did not answer within {START_TIMEOUT_SECONDS} s")
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._directory, ignore_errors=True)

    def log(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def allocations_by(self, username: str) -> int:
        """How many TURN allocations coturn granted to `username`, from its log."""
        return sum(
            1
            for line in self.log().splitlines()
            if f"user <{username}>" in line and "ALLOCATE processed, success" in line
        )

    def _answers_stun(self) -> bool:
        """Whether a STUN binding request to the server gets a response."""
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.settimeout(PROBE_INTERVAL_SECONDS)
            try:
                probe.sendto(bytes(request), (self.address, self.port))
                data = probe.recv(2048)
            except OSError:  # a timeout, or refused while it starts
                return False
        return stun.parse_message(data).transaction_id == request.transaction_id
