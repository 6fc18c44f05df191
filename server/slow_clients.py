"""Deadlines for slow HTTP clients: uvicorn's h11 protocol with header and body timeouts.

uvicorn bounds only the idle time between requests (timeout_keep_alive), and any byte
received cancels that; a client that sends its headers, or its body, a byte at a time
holds its connection (and a request's memory) for as long as it likes. Here the request
line and headers must arrive within `header_timeout` of the connection (or of the end of
the previous response), and a body within `body_timeout` plus one second per
`body_min_rate` bytes received (Apache mod_reqtimeout's rule: a slow but steady upload
on a poor mobile link keeps going, a trickle does not). Past a deadline the client gets a
408 (if no response has started) and the connection is closed.

A request body is also read in fewer turns of the event loop (`BodyFlowControl`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

BODY_BUFFER_BYTES = 1024 * 1024
"""How much of a request body a connection buffers before it stops reading (uvicorn: 64 KiB)."""
BODY_BUFFER_CONNECTIONS = 32
"""How many connections may buffer that much at once; the others stop at uvicorn's 64 KiB."""


@dataclass(frozen=True)
class ClientDeadlines:
    header_timeout: float
    body_timeout: float
    body_min_rate: float  # bytes per second


def request_timeout_response(sentence: str) -> bytes:
    """A complete HTTP/1.1 408 response that closes the connection, JSON `{"detail"}`."""
    body = json.dumps({"detail": sentence}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "content-type: application/json\r\n"
        "connection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class BodyFlowControl(FlowControl):
    """uvicorn's flow control, letting a request body buffer up to `BODY_BUFFER_BYTES`
    before reading pauses, for at most `BODY_BUFFER_CONNECTIONS` connections at a time
    (32 MiB in all; the rest pause at uvicorn's 64 KiB, as before).

    uvicorn pauses reading past 64 KiB until the app takes the buffer; each 64 KiB of an
    upload then costs two turns of the event loop (read resumed, then data read), and
    on a loaded loop a turn is long: with 12 sessions speaking, this box, a 700 KB
    upload's body took 142-224 ms (median) to read, and 4-10 ms with 1 MiB
    (`scripts/bench_sessions.py --counts 12`, first speech p95 960-971 ms against
    1018-1287). A pipelined request (h11 PAUSED) still pauses at once.
    """

    extended: set[Any] = set()
    """The connections buffering past 64 KiB now (one loop, one set)."""

    def __init__(self, transport: asyncio.Transport, protocol: H11Protocol) -> None:
        super().__init__(transport)
        self._protocol = protocol

    def pause_reading(self) -> None:
        protocol = self._protocol
        cycle: Any = protocol.cycle
        extended = self.extended
        if (
            cycle is not None
            and protocol.conn.their_state is h11.SEND_BODY
            and len(cycle.body) <= BODY_BUFFER_BYTES
            and (protocol in extended or len(extended) < BODY_BUFFER_CONNECTIONS)
        ):
            extended.add(protocol)
            return
        super().pause_reading()

    def resume_reading(self) -> None:
        self.release()  # the app takes the buffer
        super().resume_reading()

    def release(self) -> None:
        self.extended.discard(self._protocol)


class DeadlineH11Protocol(H11Protocol):
    """H11Protocol whose requests must arrive in time; `deadlines` is set by a subclass
    (`protocol_with_deadlines`), since uvicorn builds protocols from a class."""

    deadlines: ClientDeadlines

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._timer: asyncio.TimerHandle | None = None
        self._body_started = 0.0
        self._body_bytes = 0
        super().connection_made(transport)
        self.flow = BodyFlowControl(transport, self)
        self._expect_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if isinstance(self.flow, BodyFlowControl):
            self.flow.release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._timer is not None and self.conn.their_state is h11.SEND_BODY:
            self._body_bytes += len(data)
        super().data_received(data)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.transport.is_closing():
            self._cancel_timer()
        elif self.cycle is not cycle:  # a new request's head arrived
            self._cancel_timer()
            if self.conn.their_state is h11.SEND_BODY:
                self._body_started = self.loop.time()
                self._body_bytes = 0
                self._timer = self.loop.call_later(self.deadlines.body_timeout, self._check_body)
        elif self.conn.their_state is not h11.SEND_BODY and self._in_body():
            # The body is complete. Answered already (early, e.g. a refusal): the next
            # request may follow; else the app works on it, with no deadline here.
            if self.cycle is not None and self.cycle.response_complete:
                self._expect_headers()
            else:
                self._cancel_timer()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing() and self.conn.their_state is not h11.SEND_BODY:
            self._expect_headers()
        super().on_response_complete()

    # --- deadlines ---------------------------------------------------------------------

    def _in_body(self) -> bool:
        return self._timer is not None and self._body_started > 0

    def _expect_headers(self) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(self.deadlines.header_timeout, self._headers_late)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._body_started = 0.0

    def _body_deadline(self) -> float:
        limits = self.deadlines
        return self._body_started + limits.body_timeout + self._body_bytes / limits.body_min_rate

    def _check_body(self) -> None:
        now = self.loop.time()
        deadline = self._body_deadline()
        if now < deadline:
            self._timer = self.loop.call_later(deadline - now, self._check_body)
            return
        cycle: Any = self.cycle
        self._cut(
            cycle is None or not cycle.response_started,
            f"The request body arrived too slowly ({self._body_bytes} bytes in "
            f"{now - self._body_started:.0f} s); send it faster or in a smaller file."
        )

    def _headers_late(self) -> None:
        self._timer = None
        cycle: Any = self.cycle
        self._cut(
            cycle is None or cycle.response_complete,
            f"The request's headers did not arrive within {self.deadlines.header_timeout:g} s."
        )

    def _cut(self, respond: bool, sentence: str) -> None:
        """Close the connection; first answer 408 if `respond` (no other answer begun)."""
        self._timer = None
        if self.transport.is_closing():
            return
        client = "%s:%d" % self.client if self.client else "a client"
        logger.warning("closing the connection of %s: %s", client, sentence)
        cycle: Any = self.cycle
        if respond:
            self.transport.write(request_timeout_response(sentence))
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() returns http.disconnect
            cycle.message_event.set()
        self.transport.close()


def protocol_with_deadlines(deadlines: ClientDeadlines) -> type[DeadlineH11Protocol]:
    """The protocol class to give uvicorn (`Config(http=...)`)."""
    return type("DeadlineH11Protocol", (DeadlineH11Protocol,), {"deadlines": deadlines})
