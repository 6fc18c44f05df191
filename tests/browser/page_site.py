"""A web site of its own origin for pages that drive a published client (WHEP players,
D-ID's and HeyGen's SDKs, pages written from a vendor's protocol), and the server those
pages call across origins."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import make_settings
from tests.live_server import NETNS_HOST_ADDRESS, LiveServer


def cannot_run(test: str, reason: str) -> None:
    """Skip `test` for `reason`; in CI, where everything it needs is set up, fail."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the {test}, but {reason}")
    pytest.skip(reason)


class PageSite:
    """The pages and the packages' files, served on an origin of their own."""

    def __init__(self, files: dict[str, bytes]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = files.get(self.path.lstrip("/").split("?", 1)[0])
                if body is None:
                    self.send_error(404)
                    return
                kind = "text/html" if self.path.endswith(".html") else "text/javascript"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((NETNS_HOST_ADDRESS, 0), Handler)
        self.origin = f"http://{NETNS_HOST_ADDRESS}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def server_for(site: PageSite, key: str) -> Iterator[LiveServer]:
    """A server in the namespace that takes API key `key` and lets `site`'s pages call it."""
    settings = make_settings(
        ice_host_addresses=(NETNS_HOST_ADDRESS,), api_keys=(key,), cors_allow_origins=(site.origin,)
    )
    live = LiveServer(settings).start()
    try:
        yield live
    finally:
        live.stop()
