"""The real server process against slow and careless clients: deadlines, shutdown, proxies."""

from __future__ import annotations

import signal
import socket
import threading
import time

import httpx

from tests.server_process import CREATE_TIMEOUT_SECONDS, ServerProcess

SLOW_HEAD = b"POST /webrtc/sessions/create HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def read_until_closed(connection: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (or `timeout`)."""
    connection.settimeout(timeout)
    data = b""
    try:
        while chunk := connection.recv(4096):
            data += chunk
    except TimeoutError:
        raise AssertionError(f"the connection was still open after {timeout} s") from None
    return data


def start_trickled_offer(connection: socket.socket, size: int) -> None:
    connection.sendall(
        b"POST /webrtc/sessions/none/offer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(size).encode() + b"\r\n\r\n"
    )


def trickle(connection: socket.socket, bytes_per_second: int, stop: threading.Event) -> None:
    """Send a body at `bytes_per_second`, in tenths of a second, until stopped or cut."""
    try:
        while not stop.is_set():
            connection.sendall(b" " * (bytes_per_second // 10))
            time.sleep(0.1)
    except OSError:
        pass


def test_half_sent_requests_are_closed_after_the_header_timeout() -> None:
    with ServerProcess({"HTTP_HEADER_TIMEOUT_SECONDS": "1"}) as server:
        connections = [server.connect() for _ in range(200)]
        for connection in connections:
            connection.sendall(SLOW_HEAD)
        started = time.monotonic()
        answers = [read_until_closed(c, timeout=10) for c in connections]
        elapsed = time.monotonic() - started
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers)
        assert b"did not arrive within 1 s" in answers[0]
        assert elapsed < 5
        for connection in connections:
            connection.close()
        assert httpx.get(f"{server.url}/health").status_code == 200


def test_a_connection_sending_nothing_is_closed_after_the_header_timeout() -> None:
    with ServerProcess({"HTTP_HEADER_TIMEOUT_SECONDS": "1"}) as server:
        with server.connect() as connection:
            started = time.monotonic()
            read_until_closed(connection, timeout=10)
            assert time.monotonic() - started < 4


def test_a_body_trickled_below_the_minimum_rate_is_cut_with_408() -> None:
    environment = {"HTTP_BODY_TIMEOUT_SECONDS": "1", "HTTP_BODY_MIN_BYTES_PER_SECOND": "4096"}
    with ServerProcess(environment) as server:
        with server.connect() as connection:
            start_trickled_offer(connection, 100_000)
            stop = threading.Event()
            sender = threading.Thread(target=trickle, args=(connection, 1024, stop), daemon=True)
            started = time.monotonic()
            sender.start()
            try:
                answer = read_until_closed(connection, timeout=10)
            finally:
                stop.set()
                sender.join()
            # 1 s, plus 1 s per 4096 bytes received at 1 KB/s: cut after about 1.3 s.
            assert 1.0 < time.monotonic() - started < 4
            assert answer.startswith(b"HTTP/1.1 408 ")
            assert b"arrived too slowly" in answer


def test_a_steady_body_above_the_minimum_rate_is_read() -> None:
    environment = {"HTTP_BODY_TIMEOUT_SECONDS": "1", "HTTP_BODY_MIN_BYTES_PER_SECOND": "4096"}
    with ServerProcess(environment) as server:
        with server.connect() as connection:
            size = 64 * 1024
            start_trickled_offer(connection, size)
            for _ in range(32):  # 2 KiB every 0.1 s (20 KiB/s): 3.2 s, longer than 1 s
                connection.sendall(b" " * (size // 32))
                time.sleep(0.1)
            answer = read_until_closed(connection, timeout=10)
            assert not answer.startswith(b"HTTP/1.1 408 ")
            assert answer.startswith(b"HTTP/1.1 4")  # the app's own answer to a blank body


def test_sigterm_drains_within_the_shutdown_timeout_while_an_upload_trickles() -> None:
    with ServerProcess({"SHUTDOWN_TIMEOUT_SECONDS": "2"}) as server:
        assert httpx.post(f"{server.url}/webrtc/sessions/create", timeout=CREATE_TIMEOUT_SECONDS).status_code == 200
        connection = server.connect()
        start_trickled_offer(connection, 1_000_000)  # ~17 minutes at 1 KB/s
        stop = threading.Event()
        sender = threading.Thread(target=trickle, args=(connection, 1024, stop), daemon=True)
        sender.start()
        try:
            time.sleep(1.0)
            started = time.monotonic()
            server.terminate()
            server.process.wait(20)
            elapsed = time.monotonic() - started
        finally:
            stop.set()
            sender.join()
            connection.close()
        output = server.output()
        assert elapsed < 2 + 3, f"the server took {elapsed:.1f} s to exit"
        # uvicorn ends by re-raising the signal it handled, once shut down.
        assert server.process.returncode in (0, -signal.SIGTERM), output


def test_x_forwarded_for_from_a_trusted_proxy_is_the_client_for_rate_limits() -> None:
    environment = {"RATE_LIMIT_CREATE_BURST": "1", "RATE_LIMIT_CREATE_PER_MINUTE": "1"}
    with ServerProcess(environment) as server:  # FORWARDED_ALLOW_IPS: 127.0.0.1 by default
        create = f"{server.url}/webrtc/sessions/create"
        assert httpx.post(create, headers={"X-Forwarded-For": "198.51.100.1"}, timeout=CREATE_TIMEOUT_SECONDS).status_code == 200
        assert httpx.post(create, headers={"X-Forwarded-For": "198.51.100.2"}).status_code == 200
        again = httpx.post(create, headers={"X-Forwarded-For": "198.51.100.1"})
        assert again.status_code == 429
        assert int(again.headers["Retry-After"]) >= 1


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    environment = {
        "RATE_LIMIT_CREATE_BURST": "1",
        "RATE_LIMIT_CREATE_PER_MINUTE": "1",
        "FORWARDED_ALLOW_IPS": "",
    }
    with ServerProcess(environment) as server:
        create = f"{server.url}/webrtc/sessions/create"
        assert httpx.post(create, headers={"X-Forwarded-For": "198.51.100.1"}, timeout=CREATE_TIMEOUT_SECONDS).status_code == 200
        assert httpx.post(create, headers={"X-Forwarded-For": "198.51.100.2"}).status_code == 429
