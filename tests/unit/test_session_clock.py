"""The session clock's NTP times, which RTCP sender reports pair with RTP timestamps."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.media.clock import NTP_SECOND, NTP_UNIX_OFFSET, SessionClock


def test_ntp_times_differ_by_exactly_the_media_times_however_late_they_are_read() -> None:
    clock = SessionClock()
    first = clock.ntp(1.25)
    time.sleep(0.02)  # reading later changes nothing: the mapping was fixed at the start
    assert clock.ntp(1.25) == first
    assert clock.ntp(3.75) - first == pytest.approx(2.5 * NTP_SECOND, abs=1)


def test_ntp_time_is_the_wall_clock_of_that_media_time() -> None:
    clock = SessionClock()
    now_ntp = (time.time() + NTP_UNIX_OFFSET) * NTP_SECOND
    assert abs(clock.ntp(clock.now()) - now_ntp) / NTP_SECOND < 0.005


def test_a_stall_between_the_two_clocks_reads_does_not_shift_the_mapping() -> None:
    """A preempted read (here 15 ms between reading the wall clock and the monotonic
    one again, on the first try) would move a whole track's lip sync by as much."""
    base = time.monotonic()
    reads = {"n": 0}

    def monotonic() -> float:
        reads["n"] += 1
        if reads["n"] == 3:  # after the origin, the first bracket's closing read
            time.sleep(0.015)
        return time.monotonic() - base

    stalled = SessionClock(monotonic)
    steady = SessionClock(lambda: time.monotonic() - base)
    # Both clocks count media time from about the same instant; with the stalled read
    # taken as the offset they would differ by the stall's half, 7.5 ms.
    offset = (stalled.ntp(0.0) - stalled.wall(0.0) * NTP_SECOND) - (steady.ntp(0.0) - steady.wall(0.0) * NTP_SECOND)
    assert abs(offset) / NTP_SECOND < 0.001, offset / NTP_SECOND


async def test_sleep_until_reports_a_wake_that_came_with_the_end_of_the_sleep() -> None:
    """The time runs out in the same turns of the loop as the wake is set: the waiter
    must still see it (here the event is set but its waiter never resumes, as when the
    timeout is handled first)."""

    class Unheard(asyncio.Event):
        async def wait(self) -> bool:  # type: ignore[override]
            await asyncio.sleep(3600)
            return True

    clock = SessionClock()
    wake = Unheard()
    asyncio.get_running_loop().call_later(0.01, wake.set)
    assert await clock.sleep_until(clock.now() + 0.05, wake) is False
    unset = Unheard()
    assert await clock.sleep_until(clock.now() + 0.02, unset) is True
    assert await clock.sleep_until(clock.now() + 0.02, wake) is False  # already set
    assert await clock.sleep_until(clock.now() + 0.02, None) is True
