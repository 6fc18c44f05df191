"""Fetching a client's `audio_url` without letting it reach what it should not (SSRF).

Only hosts the operator lists (AUDIO_URL_ALLOWED_HOSTS) are fetched, over http(s) on
their default or a named port. Each host is resolved once; every address it resolves to
is checked (private, loopback, link-local, multicast and reserved addresses are refused
unless the host is listed by its exact name) and the connection goes to a checked
address, so a second DNS answer cannot change it (DNS rebinding). Redirects are
followed a few times, each hop checked as the first. The body is read up to
MAX_UPLOAD_BYTES and the whole fetch bounded by AUDIO_URL_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore

from server.refusal import Refusal

MAX_REDIRECTS = 3
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
SCHEMES = {"http": 80, "https": 443}
MAX_URL_CHARS = 2048


class AudioUrlError(Refusal):
    """An `audio_url` the server will not fetch (400, 403), or whose fetch failed (422,
    413, 504)."""


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """Whether `host` is listed: exactly, under a `*.domain` entry, or by `*` (any)."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower().rstrip(".")
        if entry in (host, "*") or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True
    return False


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses of allowed hosts that pass the address check."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allowed = allowed

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None,
        local_address: str | None = None, socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        address = await checked_address(host, port, self._allowed)
        return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise AudioUrlError("audio_url must be an http(s) URL.", 400)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


async def checked_address(host: str, port: int, allowed: tuple[str, ...]) -> str:
    """The address to connect to for `host`: resolved once, every answer checked."""
    if not host_allowed(host, allowed):
        raise AudioUrlError(_not_listed(host), 403)
    exact = host.lower().rstrip(".") in (a.lower().rstrip(".") for a in allowed)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise AudioUrlError(f"audio_url's host {host!r} does not resolve.", 422) from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise AudioUrlError(f"audio_url's host {host!r} does not resolve.", 422)
    if not exact and not all(_public(a) for a in addresses):
        raise AudioUrlError(
            f"audio_url's host {host!r} resolves to a private, loopback or link-local "
            "address; such a host is fetched only when AUDIO_URL_ALLOWED_HOSTS names it "
            "exactly (not by a wildcard).",
            403,
        )
    return addresses[0]


def _not_listed(host: str) -> str:
    return (
        f"audio_url's host {host!r} is not one this server fetches from: the operator lists "
        "allowed hosts in AUDIO_URL_ALLOWED_HOSTS (none are by default); or send the "
        "audio itself to POST /webrtc/sessions/{id}/stream."
    )


def check_url(url: str, allowed: tuple[str, ...]) -> tuple[str, str, int]:
    """Refuse a URL that is not http(s) to a listed host; its scheme, host and port."""
    if len(url) > MAX_URL_CHARS:
        raise AudioUrlError(f"audio_url is longer than {MAX_URL_CHARS} characters.", 400)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise AudioUrlError("audio_url is not a valid URL.", 400) from None
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise AudioUrlError("audio_url must be an http:// or https:// URL with a host.", 400)
    if parts.username or parts.password:
        raise AudioUrlError("audio_url must not carry credentials.", 400)
    if not allowed:
        raise AudioUrlError(_not_listed(parts.hostname), 403)
    if not host_allowed(parts.hostname, allowed):
        raise AudioUrlError(_not_listed(parts.hostname), 403)
    return parts.scheme, parts.hostname, port or SCHEMES[parts.scheme]


async def fetch_audio(
    url: str, allowed: tuple[str, ...], max_bytes: int, timeout: float
) -> bytes:
    """The body at `url`, within the checks above; refusals are `AudioUrlError`."""
    check_url(url, allowed)
    try:
        return await asyncio.wait_for(_fetch(url, allowed, max_bytes), timeout)
    except TimeoutError:
        raise AudioUrlError(
            f"audio_url took longer than {timeout:g} s to fetch (AUDIO_URL_TIMEOUT_SECONDS).", 504
        ) from None


async def _fetch(url: str, allowed: tuple[str, ...], max_bytes: int) -> bytes:
    backend = _CheckedBackend(allowed)
    async with httpcore.AsyncConnectionPool(
        ssl_context=ssl.create_default_context(), network_backend=backend, retries=0
    ) as pool:
        for _ in range(MAX_REDIRECTS + 1):
            check_url(url, allowed)
            try:
                async with pool.stream("GET", url, headers={"Accept": "audio/*"}) as response:
                    if response.status in REDIRECT_STATUSES:
                        location = _header(response, b"location")
                        if not location:
                            raise AudioUrlError("audio_url redirected without a Location.", 422)
                        url = urljoin(url, location)
                        continue
                    if response.status != 200:
                        raise AudioUrlError(
                            f"audio_url answered HTTP {response.status}, not the audio.", 422
                        )
                    return await _read(response, max_bytes)
            except httpcore.TimeoutException:
                raise AudioUrlError("audio_url did not answer in time.", 504) from None
            except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as error:
                raise AudioUrlError(f"audio_url could not be fetched ({error}).", 422) from None
        raise AudioUrlError(f"audio_url redirected more than {MAX_REDIRECTS} times.", 422)


def _header(response: httpcore.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _read(response: httpcore.Response, max_bytes: int) -> bytes:
    length = _header(response, b"content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise _too_large(max_bytes)
    data = bytearray()
    async for chunk in response.aiter_stream():
        data.extend(chunk)
        if len(data) > max_bytes:
            raise _too_large(max_bytes)
    return bytes(data)


def _too_large(max_bytes: int) -> AudioUrlError:
    return AudioUrlError(
        f"audio_url's audio is over {max_bytes} bytes (MAX_UPLOAD_BYTES).", 413
    )
