"""How uvicorn serves the app: slow-client deadlines, connection bound, proxies, shutdown."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from server.settings import Settings
from server.slow_clients import ClientDeadlines, protocol_with_deadlines


def uvicorn_config(app: FastAPI, settings: Settings, log_level: str = "info") -> uvicorn.Config:
    """uvicorn's configuration for `app` on settings.host:settings.port.

    After SIGTERM, requests in flight get SHUTDOWN_TIMEOUT_SECONDS and are then cancelled,
    before the sessions are closed. X-Forwarded-For and X-Forwarded-Proto are believed
    only from FORWARDED_ALLOW_IPS: the rate limits and the logs then see the client's
    address, not the proxy's.
    """
    deadlines = ClientDeadlines(
        settings.http_header_timeout_seconds,
        settings.http_body_timeout_seconds,
        settings.http_body_min_rate,
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        log_config=None,  # logging is configured once, by server.logs (LOG_FORMAT)
        http=protocol_with_deadlines(deadlines),
        limit_concurrency=settings.http_max_connections,
        timeout_graceful_shutdown=settings.shutdown_timeout_seconds,  # type: ignore[arg-type]
        proxy_headers=True,
        forwarded_allow_ips=list(settings.forwarded_allow_ips),
    )
