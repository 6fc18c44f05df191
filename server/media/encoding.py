"""Where the server's media encoding runs: an audio pool, a video pool, the shared idle loops.

aiortc would encode every track's frames in the event loop's default thread pool, Opus
and VP8 (and anything else using that pool) in one queue: under load an audio frame waited
behind video encodes and audio broke first although it is the cheapest stream. The tracks
encode here instead and hand aiortc finished packets (it then only packetizes them):
Opus in a pool of its own that video never occupies, VP8 in another.

One event loop or several (issue 9, item 3), decided from figures measured on the 2-core
development box, shared with other work while measured (demo engine, 512×512 VP8;
`scripts/profile_sessions.py --sessions 4` (py-spy) and `scripts/bench_sessions.py`):

- CPU per video frame sent at fps 25 / playback 25, 4 sessions speaking (5.8 ms in all):
  render 1.5 ms (the render thread; on the GPU there), RGB→yuv420p of the rendered frame
  1.3 ms and VP8 1.7 ms (the video pool; libvpx runs with the GIL released), Opus 0.44 ms
  for the frame's two 20 ms audio frames (the audio pool); and on the event loop:
  packetization 0.01 ms, SRTP 0.05 ms, UDP send 0.2 ms, pacing and playout 0.3 ms, the
  rest of the loop ~0.4 ms: about 1 ms of the loop's thread per video frame with its audio.
- Measured on the loop's thread itself (/proc, main thread): 12% of a core for 4 sessions
  speaking at 25 fps (~1.2 ms per video frame with its audio); an idle session 2.5% of a
  core at playback 15 (~1.7 ms per frame sent with its 3⅓ audio frames, RTCP included).

The GPU goal, 500 frames/s (20 sessions at 25 fps), puts 500 × ~1.2 ms ≈ 0.6 s a second on
the loop at this box's speed, less on a server core: one event loop carries it, with the
encoders' native work in the pools beside it (16 cores), so sessions are not sharded over
media processes. The peer that saturates at ~180 frames/s encodes and converts through
aiortc's default pool and passes frames through the loop; that is what moved off it here.
Shard (one media process per group of sessions, one render process feeding them) when a
GPU run shows this loop's thread above ~70% of a core: `scripts/bench_sessions.py` prints it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from server.media.idle_share import IdleLoops

AUDIO_ENCODE_THREADS = 2
"""Opus (mono) costs ~0.075 ms per 20 ms frame: two threads carry hundreds of sessions' audio."""


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
