"""KEEP_FREED_MEMORY_MIB: frames freed and allocated again reuse memory instead of paying
a page fault per 4 KiB for fresh pages each time."""

from __future__ import annotations

import subprocess
import sys

import pytest

from server.core import keep_freed_memory
from server.settings import Settings

# In a fresh process: rounds of eight 768 KiB frames (512×512 RGB) allocated, written and
# freed, as renders and conversions do; prints the page faults of the rounds after the first.
FRAMES = """
import resource, sys
import numpy as np
from server.core import keep_freed_memory
keep_freed_memory(int(sys.argv[1]))
def round_():
    frames = [np.full((512, 512, 3), i, np.uint8) for i in range(8)]
    del frames
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mib: int) -> int:
    done = subprocess.run([sys.executable, "-c", FRAMES, str(mib)], capture_output=True, text=True, check=True)
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_kept_memory_is_reused_without_page_faults() -> None:
    fresh = page_faults(0)  # glibc's defaults: the frames' pages come and go
    kept = page_faults(256)
    assert fresh > 20 * 8 * 100  # most of a 768 KiB frame's 192 pages, every round
    assert kept < fresh / 20


def test_zero_leaves_the_allocator_alone() -> None:
    assert keep_freed_memory(0) is False


@pytest.mark.parametrize("value", ["-1", "2048"])
def test_out_of_range_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="KEEP_FREED_MEMORY_MIB must be between 0 and 2047"):
        Settings.from_env({"KEEP_FREED_MEMORY_MIB": value})
