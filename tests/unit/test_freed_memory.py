"""Freed heap is given back once after a burst of sessions ends (glibc's malloc_trim)."""

from __future__ import annotations

import asyncio
import ctypes.util

import pytest

from server.memory import FreedMemory

pytestmark = pytest.mark.skipif(ctypes.util.find_library("c") is None, reason="no C library")


async def test_a_burst_of_releases_trims_once_after_the_last() -> None:
    freed = FreedMemory(delay=0.1)
    for _ in range(20):
        freed.release_soon()
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    assert freed.releases == 1
    freed.release_soon()
    await asyncio.sleep(0.3)
    assert freed.releases == 2
    await freed.close()
