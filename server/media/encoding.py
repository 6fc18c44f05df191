"""Where the server's media encoding runs: Opus on the event loop, a video pool, the shared
idle loops.

aiortc would encode every track's frames in the event loop's default thread pool, Opus
and VP8 (and anything else using that pool) in one queue: under load an audio frame waited
behind video encodes and audio broke first although it is the cheapest stream. The tracks
encode themselves and hand aiortc finished packets (it then only packetizes them): VP8 in
a pool of its own, and Opus on the event loop, in the step that releases the frame.

Opus had a pool of its own (two threads) until the figures said otherwise. Its encode
(mono, 20 ms: ~0.1 ms) holds the GIL for most of its time (PyAV: a pure-Python thread
beside an encoding one kept 67% of its pace, beside a second pure-Python one 50%), so the
pool ran nothing in parallel; it only added two hand-offs per frame, each waiting for the
GIL and a core. On a busy box those waits made audio leave late, and the video was held
back to it. With 12 sessions speaking at 10 / 15, in 8 runs taken turn about: the pool
gave 0–614 video frames held (over 200 in 3 runs), 0–21 late, the worst session's sync up
to 46 ms off; on the loop, 0–1 held, none late, every run within ±41 ms and 7 of 8 within
±8; the server's CPU 86–96% of a core against 96–102%, of which the loop's thread 32–37%
against 26–28%. First speech p95 was 441–827 ms against 383–573: the loop is busier when
it answers the uploads. With 8 sessions at 25 / 25, in 3 runs taken turn about: 0–12 late
frames against 97–153, 24.7–24.8 fps against 22.8–24.9, first speech p95 432–637 ms
against 520–689, the server at 104–112% against 114–115%. At 20 sessions speaking that
is 1,000 frames a second, ~0.1 s a second of the loop's thread.

One event loop or several (issue 9, item 3), decided from figures measured on the 2-core
development box, shared with other work while measured (demo engine, 512×512 VP8;
`scripts/profile_sessions.py --sessions 4` (py-spy) and `scripts/bench_sessions.py`):

- CPU per video frame sent at fps 25 / playback 25, 4 sessions speaking (5.8 ms in all):
  render 1.5 ms (the render thread; on the GPU there), RGB→yuv420p of the rendered frame
  1.3 ms and VP8 1.7 ms (the video pool; libvpx runs with the GIL released), Opus 0.44 ms
  for the frame's two 20 ms audio frames (then in a pool; on the loop since); and on the
  event loop:
  packetization 0.01 ms, SRTP 0.05 ms, UDP send 0.2 ms, pacing and playout 0.3 ms, the
  rest of the loop ~0.4 ms: about 1 ms of the loop's thread per video frame with its audio.
- Measured on the loop's thread itself (/proc, main thread): 12% of a core for 4 sessions
  speaking at 25 fps (~1.2 ms per video frame with its audio); an idle session 2.5% of a
  core at playback 15 (~1.7 ms per frame sent with its 3⅓ audio frames, RTCP included).

The GPU goal, 500 frames/s (20 sessions at 25 fps), puts 500 × ~1.2 ms ≈ 0.6 s a second on
the loop at this box's speed (and its audio ~0.1 s more), less on a server core: one
event loop carries it, with the encoders' native work in the pools beside it (16 cores), so sessions are not sharded over
media processes. The peer that saturates at ~180 frames/s encodes and converts through
aiortc's default pool and passes frames through the loop; that is what moved off it here.
Shard (one media process per group of sessions, one render process feeding them) when a
GPU run shows this loop's thread above ~70% of a core: `scripts/bench_sessions.py` prints it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from server.media.idle_share import IdleLoops


class MediaEncoding:
    """The video encoding pool and shared idle loops of one server process."""

    def __init__(self, video_threads: int | None = None) -> None:
        self.video_executor = ThreadPoolExecutor(
            video_threads or os.cpu_count() or 1, thread_name_prefix="vp8"
        )
        self.idle_loops = IdleLoops(self.video_executor)

    def close(self) -> None:
        self.video_executor.shutdown(wait=False, cancel_futures=True)
