"""The idle loop encoded once per avatar and sent, packet for packet, to every idle viewer.

While a session listens its video is the avatar's ping-pong cycle, the same pictures for
every session of that avatar; encoding it per session was most of an idle session's cost.
A `SharedIdleLoop` encodes one period of the cycle (for one generation `fps` and
`playback_fps`) once, with a keyframe every `KEYFRAME_INTERVAL_SECONDS`, and keeps the
packets. A video track switches between its own encoder and these packets:

- it joins the loop only on one of the loop's keyframes, at the loop position whose picture
  sequence is the one its own idle loop shows from then on (`plan`), so the picture is the
  same frame for frame as if it had encoded it itself;
- it leaves the loop for its own encoder, starting with a keyframe, when speech starts (on
  the idle frame reached, as before), when a frame is skipped, when its picture differs from
  the loop's, or when its receiver asks for a keyframe (PLI/FIR): the loop's packets cannot
  be re-encoded for one viewer, so that viewer gets its own keyframe at once and rejoins at
  the loop's next keyframe.

Each viewer reads the loop at its own position: the loop has no clock of its own, and
continuity between idle and speech stays what the session's playout decides.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import weakref
from collections.abc import Sequence
from concurrent.futures import Executor
from fractions import Fraction

import numpy as np

from server.lipsync.engine import Avatar
from server.media.clock import VIDEO_CLOCK_RATE
from server.media.video_encoder import Vp8FrameEncoder, to_yuv420p

logger = logging.getLogger(__name__)

KEYFRAME_INTERVAL_SECONDS = 1.0
"""Distance of the loop's keyframes: the longest a viewer waits on its own encoder to join."""
MAX_LOOP_FRAMES = 6000
"""A loop longer than this (an odd ratio of fps to playback_fps) is not shared."""
WARM_UP_SECONDS = 2.0
"""Encoded first and thrown away: the encoder's rate control has settled by then, so the
loop is not sent with the blurry first frames of a fresh encoder."""
LOOP_MAX_QUANTIZER = 40
"""A keyframe every second costs picture quality right after it at the live encoder's limit
(56); capped lower, the loop's worst frame on the demo avatar is 36 dB PSNR instead of 31
(mean 41 either way, at the same 500 kbps)."""
RATE_DENOMINATOR_LIMIT = 1000
KEPT_LOOPS = 8
"""Loops kept when no session uses them (each ~1–2 MB, with its avatar's yuv pictures)."""


Size = tuple[int, int] | None
"""(width, height) pictures are scaled to; None: the avatar's own."""
PicturesKey = tuple[int, Size]
LoopKey = tuple[int, Size, float, float]


class AvatarPictures:
    """An avatar's frames, and each converted once to the encoder's pixel format (scaled
    to `size`, (width, height), when a stream asks for another resolution)."""

    def __init__(self, avatar: Avatar, size: tuple[int, int] | None = None) -> None:
        self.avatar = avatar
        self.frames = avatar.frames
        self.size = size
        self._yuv: list[np.ndarray | None] = [None] * len(avatar.frames)

    def yuv(self, index: int) -> np.ndarray:
        """Frame `index` as yuv420p, converted on first use (any thread; a race converts twice)."""
        cached = self._yuv[index]
        if cached is None:
            cached = self._yuv[index] = to_yuv420p(self.frames[index], self.size)
        return cached


class SharedIdleLoop:
    """One period of an avatar's idle loop at (`fps`, `playback_fps`), encoded once.

    Position q (a playback frame) of variant v shows avatar counter
    `q * fps / playback_fps` (rounded down) + v of the cycle, the way a session's playout
    walks it. The counter advances a = fps/playback_fps·b per b playback frames, so one
    sequence reaches only every gcd(a, cycle length)-th counter at a given step phase: that
    many variants, each shifted by one counter, let every session's idle loop find its own.
    """

    def __init__(self, pictures: AvatarPictures, fps: float, playback_fps: float) -> None:
        self.pictures = pictures
        self.cycle = pictures.avatar.cycle
        rate = Fraction(fps).limit_denominator(RATE_DENOMINATOR_LIMIT) / Fraction(
            playback_fps
        ).limit_denominator(RATE_DENOMINATOR_LIMIT)
        self._a, self._b = rate.numerator, rate.denominator  # counters per playback frame
        length = len(self.cycle)
        self.variants = math.gcd(self._a, length)
        self.period = self._b * length // self.variants
        """Playback frames after which a variant's pictures repeat."""
        self.shareable = self.period * self.variants <= MAX_LOOP_FRAMES
        self.playback_fps = playback_fps
        self.keyframe_interval = max(1, round(KEYFRAME_INTERVAL_SECONDS * playback_fps))
        self._packets: list[list[bytes]] = []
        self._to_keyframe: list[list[int]] = []
        self.ready = False
        self._task: asyncio.Future[None] | None = None

    def start(self, executor: Executor | None) -> None:
        """Encode the loop in `executor`, once; `ready` when done."""
        if self._task is None and self.shareable:
            self._task = asyncio.get_running_loop().run_in_executor(executor, self._build)
            self._task.add_done_callback(self._built)

    def counter(self, variant: int, position: int) -> int:
        """The avatar counter shown at `position` (any integer) of `variant`."""
        return position * self._a // self._b + variant

    def picture(self, variant: int, position: int) -> int:
        """The avatar frame index shown at `position` (taken mod the period) of `variant`."""
        return self.cycle[self.counter(variant, position % self.period) % len(self.cycle)]

    def packet(self, variant: int, position: int) -> bytes:
        return self._packets[variant][position % self.period]

    def is_keyframe(self, variant: int, position: int) -> bool:
        return self._to_keyframe[variant][position % self.period] == 0

    def plan(self, counters: Sequence[int], frame: int) -> tuple[int, int, int] | None:
        """Where a viewer whose own idle loop shows avatar counters `counters` at playback
        frames `frame`, `frame` + 1, … joins: (variant, offset from its frame numbers to
        positions, the frame it joins on, a keyframe); None if nothing matches.

        `counters` must cover a whole step pattern (`rate_period` frames, plus one): two
        rounded-down lines of the same slope that agree that long agree for ever.
        """
        length = len(self.cycle)
        wanted = [c % length for c in counters]
        best: tuple[int, int, int] | None = None  # variant, offset, wait
        for variant in range(self.variants):
            for offset in range(self.period):
                start = frame + offset
                if all(self.counter(variant, start + j) % length == c for j, c in enumerate(wanted)):
                    wait = self._to_keyframe[variant][start % self.period]
                    if best is None or wait < best[2]:
                        best = (variant, offset, wait)
        return None if best is None else (best[0], best[1], frame + best[2])

    @property
    def rate_period(self) -> int:
        """Playback frames after which the counter steps repeat their pattern."""
        return self._b

    def _build(self) -> None:
        packets, to_key = [], []
        for variant in range(self.variants):
            data, keys = self._encode_variant(variant)
            packets.append(data)
            to_key.append(keys)
        self._packets, self._to_keyframe = packets, to_key

    def _encode_variant(self, variant: int) -> tuple[list[bytes], list[int]]:
        encoder = Vp8FrameEncoder(max_quantizer=LOOP_MAX_QUANTIZER)
        packets: list[bytes] = []
        keys: list[bool] = []
        warm_up = round(WARM_UP_SECONDS * self.keyframe_interval / KEYFRAME_INTERVAL_SECONDS)
        for q in range(-warm_up, self.period):
            data, key = encoder.encode(
                self.pictures.yuv(self.picture(variant, q)),
                round(q * VIDEO_CLOCK_RATE / self.playback_fps),
                keyframe=q % self.keyframe_interval == 0,
            )
            if q >= 0:
                packets.append(data)
                keys.append(key)
        # Frames until the next keyframe, from each position (the loop wraps to position 0).
        to_key = [0] * self.period
        distance = 0
        for q in range(2 * self.period - 1, -1, -1):
            distance = 0 if keys[q % self.period] else distance + 1
            if q < self.period:
                to_key[q] = distance
        return packets, to_key

    def _built(self, future: asyncio.Future[None]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:  # sessions go on encoding their idle frames themselves
            logger.warning("encoding the shared idle loop failed: %s", error)
            return
        self.ready = True


class IdleLoops:
    """The avatars' converted pictures and shared idle loops: kept while a session uses
    them, and the `KEPT_LOOPS` used last also after, so that sessions that come and go do
    not encode the loop again each time."""

    def __init__(self, executor: Executor | None) -> None:
        self._executor = executor
        self._pictures: weakref.WeakValueDictionary[PicturesKey, AvatarPictures] = (
            weakref.WeakValueDictionary()
        )
        self._loops: weakref.WeakValueDictionary[LoopKey, SharedIdleLoop] = weakref.WeakValueDictionary()
        self._kept: collections.OrderedDict[LoopKey, SharedIdleLoop] = collections.OrderedDict()

    def pictures(self, avatar: Avatar, size: Size = None) -> AvatarPictures:
        """`avatar`'s pictures, scaled to `size` (width, height) if given."""
        key = (id(avatar), size)
        pictures = self._pictures.get(key)
        if pictures is None or pictures.avatar is not avatar:
            pictures = self._pictures[key] = AvatarPictures(avatar, size)
        return pictures

    def loop(self, avatar: Avatar, fps: float, playback_fps: float, size: Size = None) -> SharedIdleLoop:
        """The shared loop of `avatar` at these rates (and `size`), its encoding started
        (call in the loop)."""
        key = (id(avatar), size, float(fps), float(playback_fps))
        loop = self._loops.get(key)
        if loop is None or loop.pictures.avatar is not avatar:
            loop = self._loops[key] = SharedIdleLoop(self.pictures(avatar, size), fps, playback_fps)
            loop.start(self._executor)
        self._kept[key] = loop
        self._kept.move_to_end(key)
        while len(self._kept) > KEPT_LOOPS:
            self._kept.popitem(last=False)
        return loop
