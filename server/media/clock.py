"""The session clock: one monotonic media time shared by a session's audio and video."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from fractions import Fraction

AUDIO_SAMPLE_RATE = 48_000
AUDIO_PTIME = 0.020
AUDIO_SAMPLES_PER_FRAME = 960  # AUDIO_SAMPLE_RATE * AUDIO_PTIME, exactly
AUDIO_TIME_BASE = Fraction(1, AUDIO_SAMPLE_RATE)
VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)

# Media times within this of a frame boundary count as on it (float round-off).
TIME_EPSILON = 1e-6
NTP_UNIX_OFFSET = 2_208_988_800  # seconds from the NTP epoch (1900) to the Unix one (1970)
NTP_SECOND = 1 << 32  # an NTP timestamp counts seconds in its upper 32 bits
_CLOCK_READS = 5  # tries at reading both clocks at (nearly) one instant


class SessionClock:
    """Media time in seconds since the session started, on the monotonic clock.

    Both tracks take their timestamps from it and sleep until their frame's media time,
    so what the client's RTCP-based lip sync sees is decided by this one clock.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._origin = monotonic()
        self._unix_origin = self._origin + _unix_minus(monotonic)

    def now(self) -> float:
        """The current media time."""
        return self._monotonic() - self._origin

    def wall(self, media_time: float) -> float:
        """The monotonic-clock instant of `media_time`."""
        return self._origin + media_time

    def ntp(self, media_time: float) -> int:
        """`media_time` as a 64-bit NTP timestamp of the wall clock, fixed at the clock's
        start: two instants' NTP times differ by exactly their media times' difference,
        however late the caller reads it (what RTCP sender reports must pair)."""
        return round((self._unix_origin + media_time + NTP_UNIX_OFFSET) * NTP_SECOND)

    async def sleep_until(self, media_time: float, wake: asyncio.Event | None = None) -> bool:
        """Sleep until `media_time`, or until `wake` is set: False when `wake` is set on
        return, whether it cut the sleep short or came with its end.

        The time may run out while `wake` is set in the same turn of the loop (or in the
        turns that cancelling the wait takes): the caller still hears of it, and looks at
        what woke it before it acts as if nothing happened. (A speech start scheduled in
        that gap left the video's frame grid unmoved, up to half a frame off its sound.)"""
        delay = media_time - self.now()
        if wake is None:
            if delay > 0:
                await asyncio.sleep(delay)
            return True
        if wake.is_set():
            return False
        if delay <= 0:
            return True
        try:
            await asyncio.wait_for(wake.wait(), delay)
        except TimeoutError:
            return not wake.is_set()
        return False


def _unix_minus(monotonic: Callable[[], float]) -> float:
    """`time.time()` less `monotonic()`, from the tightest of a few bracketed reads (a
    thread switch or preemption between two reads would otherwise count as offset)."""
    best: tuple[float, float] | None = None
    for _ in range(_CLOCK_READS):
        before = monotonic()
        unix = time.time()
        span = monotonic() - before
        if best is None or span < best[0]:
            best = (span, unix - (before + span / 2))
    assert best is not None
    return best[1]


def audio_frame_time(n: int) -> float:
    return n * AUDIO_PTIME


def audio_frame_at_or_after(media_time: float) -> int:
    """Index of the first audio frame starting at or after `media_time`."""
    return max(0, math.ceil(media_time / AUDIO_PTIME - TIME_EPSILON))


def frame_index(media_time: float, rate: float) -> int:
    """Index of the frame of a `rate`-per-second sequence shown at `media_time`."""
    return math.floor(media_time * rate + TIME_EPSILON)
