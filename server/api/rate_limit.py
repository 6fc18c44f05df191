"""Per-client rate limits: a token bucket for each client address and kind of call.

The client address is the connection's peer, or the address a trusted proxy names in
X-Forwarded-For (uvicorn rewrites it when the peer is in FORWARDED_ALLOW_IPS).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request

from server.refusal import Refusal
from server.settings import Settings

SECONDS_PER_MINUTE = 60.0
# Buckets kept at most; past it, the full ones (clients quiet for a while) are forgotten.
MAX_TRACKED_CLIENTS = 10_000
UNKNOWN_CLIENT = "unknown"


class RateLimitedError(Refusal):
    status = 429


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`burst` calls at once per client, refilled at `per_minute`; 0 for either: no limit."""

    def __init__(
        self, what: str, per_minute: float, burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.rate = per_minute / SECONDS_PER_MINUTE  # tokens per second
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0 and self.burst > 0

    def take(self, client: str) -> None:
        """Spend one token of `client`'s bucket, or raise RateLimitedError (429)."""
        if not self.enabled:
            return
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED_CLIENTS:
                self._forget_full(now)
            bucket = self._buckets[client] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return
        wait = (1 - bucket.tokens) / self.rate
        raise RateLimitedError(
            f"Too many {self.what} from your address (at most {self.burst} at once and "
            f"{self.rate * SECONDS_PER_MINUTE:g} a minute); try again in {math.ceil(wait)} s.",
            retry_after_seconds=round(wait, 2),
        )

    def _forget_full(self, now: float) -> None:
        full = [
            client for client, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.updated) * self.rate >= self.burst
        ]
        for client in full:
            del self._buckets[client]
        if len(self._buckets) >= MAX_TRACKED_CLIENTS:  # all busy: forget the oldest
            oldest = min(self._buckets, key=lambda c: self._buckets[c].updated)
            del self._buckets[oldest]


@dataclass(frozen=True)
class RateLimits:
    """The server's limiters, one per kind of call that costs it."""

    create: RateLimiter
    upload: RateLimiter

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        return cls(
            RateLimiter("session creations", settings.create_rate_per_minute, settings.create_burst),
            RateLimiter("uploads", settings.upload_rate_per_minute, settings.upload_burst),
        )


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else UNKNOWN_CLIENT


async def limit_creates(request: Request) -> None:
    """A route dependency: one session creation from this client (async: no thread hop)."""
    request.app.state.rate_limits.create.take(client_address(request))


async def limit_uploads(request: Request) -> None:
    """A route dependency: one upload from this client (before its body is read)."""
    request.app.state.rate_limits.upload.take(client_address(request))
