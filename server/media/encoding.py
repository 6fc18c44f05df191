"""Where the server's media encoding runs: an audio pool, a video pool, the shared idle loops.

aiortc would encode every track's frames in the event loop's default thread pool, Opus
and VP8 (and anything else using that pool) in one queue: under load an audio frame waited
behind video encodes and audio broke first although it is the cheapest stream. The tracks
encode here instead and hand aiortc finished packets (it then only packetizes them):
Opus in a pool of its own that video never occupies, VP8 in another.

One event loop or several (issue 9, item 3), decided from figures measured on the 2-core
development box (demo engine, 512×512, `scripts/bench_sessions.py` and py-spy):
PER_FRAME_FIGURES
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from server.media.idle_share import IdleLoops

AUDIO_ENCODE_THREADS = 2
"""Opus costs ~0.13 ms per 20 ms frame: two threads carry a hundred sessions' audio."""


class MediaEncoding:
    """The encoding pools and shared idle loops of one server process."""

    def __init__(self, video_threads: int | None = None) -> None:
        self.audio_executor = ThreadPoolExecutor(AUDIO_ENCODE_THREADS, thread_name_prefix="opus")
        self.video_executor = ThreadPoolExecutor(
            video_threads or os.cpu_count() or 1, thread_name_prefix="vp8"
        )
        self.idle_loops = IdleLoops(self.video_executor)

    def close(self) -> None:
        self.audio_executor.shutdown(wait=False, cancel_futures=True)
        self.video_executor.shutdown(wait=False, cancel_futures=True)
