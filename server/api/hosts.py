"""The host names the server answers to: a request naming another host gets 400, so that
a web page whose name was pointed at this server (DNS rebinding) cannot use it, and no
`player_url` is ever built from a name the operator did not list."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from server.api.access import WILDCARD_HOSTS, is_loopback
from server.api.refuse import refuse
from server.settings import Settings

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
ANY_HOST = "*"
SUBDOMAIN_PREFIX = "*."


def host_name(host_header: str) -> str:
    """The name in a Host header, without its port: `[::1]:80` → `::1`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


class HostAllowList:
    """Loopback names, the bound host, PUBLIC_URL's host and ALLOWED_HOSTS; also the IP
    address the connection arrived at (a name rebinding cannot send an IP literal)."""

    def __init__(self, settings: Settings) -> None:
        names = set(LOOPBACK_NAMES)
        if settings.host not in WILDCARD_HOSTS:
            names.add(host_name(settings.host))
        public = urlsplit(settings.public_url).hostname if settings.public_url else None
        if public:
            names.add(public.lower())
        configured = [host_name(host) for host in settings.allowed_hosts]
        self.any = ANY_HOST in configured
        self.suffixes = tuple(
            host[len(SUBDOMAIN_PREFIX) - 1 :] for host in configured
            if host.startswith(SUBDOMAIN_PREFIX)
        )
        names.update(host for host in configured if not host.startswith("*"))
        self.names = frozenset(names)

    def allows(self, host: str, arrived_at: str | None = None) -> bool:
        if self.any or host in self.names or is_loopback(host):
            return True
        if any(host.endswith(suffix) for suffix in self.suffixes):
            return True
        return arrived_at is not None and host == arrived_at and _is_ip(host)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class AllowedHostsMiddleware:
    """Answers 400 to a request whose Host header is not in the allow-list."""

    def __init__(self, app: ASGIApp, hosts: HostAllowList) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            header = Headers(scope=scope).get("host")
            server = scope.get("server")
            arrived_at = server[0] if server else None
            if header is not None and not self.hosts.allows(host_name(header), arrived_at):
                shown = header[:100]
                await refuse(
                    scope, receive, send, 400,
                    f"This server does not answer to the host name {shown!r}: add it to "
                    "ALLOWED_HOSTS, or set PUBLIC_URL to the address clients use.",
                )
                return
        await self.app(scope, receive, send)
