"""The token bucket behind the per-client rate limits, on a clock the test moves."""

from __future__ import annotations

import pytest

from server.api import rate_limit
from server.api.rate_limit import RateLimitedError, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter("calls", per_minute=30, burst=2, clock=clock)
    limiter.take("a")
    limiter.take("a")
    with pytest.raises(RateLimitedError) as refused:
        limiter.take("a")
    assert refused.value.status == 429
    assert refused.value.extra["retry_after_seconds"] == 2.0  # one token per 2 s
    clock.now += 2.0
    limiter.take("a")
    limiter.take("b")  # another client has its own bucket


def test_a_refused_call_spends_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter("calls", per_minute=60, burst=1, clock=clock)
    limiter.take("a")
    for _ in range(5):
        with pytest.raises(RateLimitedError):
            limiter.take("a")
    clock.now += 1.0
    limiter.take("a")


def test_quiet_clients_are_forgotten_when_too_many_are_tracked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rate_limit, "MAX_TRACKED_CLIENTS", 3)
    clock = Clock()
    limiter = RateLimiter("calls", per_minute=60, burst=1, clock=clock)
    for client in ("a", "b", "c"):
        limiter.take(client)
    clock.now += 5.0  # a, b and c are full again
    limiter.take("d")
    assert len(limiter._buckets) == 1
