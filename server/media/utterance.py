"""One piece of speech: its audio (whole, or still arriving) and the frames rendered for it."""

from __future__ import annotations

import enum
import itertools
import math
from dataclasses import dataclass

import numpy as np

from server.media.clock import AUDIO_SAMPLE_RATE

_ids = itertools.count(1)
# A streaming resampler holds back a few samples (soxr's quick one: 4 at 24 -> 48 kHz);
# a frame that lacks no more than this at the end of its audio may be rendered already.
AVAILABLE_SLACK_SAMPLES = 48


class UtteranceState(enum.Enum):
    PENDING = "pending"  # rendering its first frames; not audible yet
    PLAYING = "playing"  # its audio is being sent
    FINISHED = "finished"  # all of its audio was sent
    CANCELLED = "cancelled"  # dropped before the end (interrupted, session ended, peer went away)


@dataclass(frozen=True)
class FrameChunk:
    """A run of an utterance's video frames processed together."""

    index: int
    frames: range


class Utterance:
    """Speech audio at 48 kHz and its rendered frames, generated at `fps`.

    Frame `j` shows utterance time [j / fps, (j + 1) / fps) and is rendered from avatar
    frame counter `start_counter + j` (see `Playout`).

    A *growing* utterance (`complete=False`, streamed speech) starts without its audio:
    `append` adds samples as they arrive and `end` marks it complete. Until then
    `duration` and `frame_count` count what has arrived, `chunks` is empty, and only
    `available_frames` may be rendered: those whose audio, and `lookahead_frames` after
    it (what the engine looks at beyond a frame), has arrived.
    """

    def __init__(
        self,
        samples: np.ndarray,
        fps: float,
        start_counter: int,
        chunk_duration: float,
        complete: bool = True,
        lookahead_frames: int = 0,
    ) -> None:
        self.id = f"u{next(_ids)}"
        self.fps = fps
        self.start_counter = start_counter
        self.chunk_duration = chunk_duration
        self.lookahead_frames = lookahead_frames
        self.complete = complete
        self.streamed = not complete
        """Whether it began without its audio (its start delay says nothing of rendering)."""
        self._buffer = np.asarray(samples, dtype=np.float32)
        self._length = len(self._buffer)
        self.samples = self._buffer  # a view of what has arrived, for a growing one
        self.chunks: list[FrameChunk] = []
        self._update_length()
        self.state = UtteranceState.PENDING
        self.start_time: float | None = None  # media time its audio starts
        self.end_time: float | None = None  # media time its audio ended
        self.accepted_at: float | None = None  # media time it was accepted
        self.earliest_start: float | None = None  # media time a streamed one may start at
        self.error: str | None = None
        self._frames: dict[int, np.ndarray] = {}
        self._ready = 0  # frames 0 .. _ready - 1 are all rendered
        self._oldest_kept = 0

    def _update_length(self) -> None:
        self.samples = self._buffer[: self._length]
        self.duration = self._length / AUDIO_SAMPLE_RATE
        self.frame_count = max(1, math.ceil(self.duration * self.fps - 1e-9))
        if self.complete:
            frames_per_chunk = max(1, round(self.chunk_duration * self.fps))
            self.chunks = [
                FrameChunk(i, range(start, min(start + frames_per_chunk, self.frame_count)))
                for i, start in enumerate(range(0, self.frame_count, frames_per_chunk))
            ]

    # --- growing ---------------------------------------------------------------------

    def append(self, samples: np.ndarray) -> None:
        """Add audio (float32 mono 48 kHz) at the end of a growing utterance."""
        if self.complete:
            raise RuntimeError("the utterance is complete")
        needed = self._length + len(samples)
        if needed > len(self._buffer):
            grown = np.zeros(max(needed, 2 * len(self._buffer), AUDIO_SAMPLE_RATE), np.float32)
            grown[: self._length] = self._buffer[: self._length]
            self._buffer = grown
        self._buffer[self._length : needed] = samples
        self._length = needed
        self._update_length()

    def end(self) -> None:
        """Mark a growing utterance complete: its duration and frame count are final."""
        if self.complete:
            return
        self.complete = True
        self._buffer = self._buffer[: self._length].copy()
        self._update_length()

    @property
    def received(self) -> int:
        """Samples arrived so far (all of them once complete)."""
        return self._length

    @property
    def available_frames(self) -> int:
        """Frames that may be rendered now: all once complete, else those whose audio
        and look-ahead has arrived."""
        if self.complete:
            return self.frame_count
        arrived = self._length + AVAILABLE_SLACK_SAMPLES
        whole = math.floor(arrived * self.fps / AUDIO_SAMPLE_RATE + 1e-9)
        return max(0, whole - self.lookahead_frames)

    @property
    def ready(self) -> int:
        """How many frames from the start are rendered without a gap."""
        return self._ready

    @property
    def active(self) -> bool:
        return self.state in (UtteranceState.PENDING, UtteranceState.PLAYING)

    def place(self, start_counter: int) -> None:
        """Render it from avatar counter `start_counter`, dropping frames rendered from another.

        A queued utterance is placed when its turn is next: where the one before it ends,
        or where the idle loop will be when it starts.
        """
        self.start_counter = start_counter
        self._frames.clear()
        self._ready = 0
        self._oldest_kept = 0

    def add_frame(self, j: int, image: np.ndarray) -> None:
        if j < self._oldest_kept or not self.active:
            return
        self._frames[j] = image
        while self._ready in self._frames:
            self._ready += 1

    def has_frame(self, j: int) -> bool:
        return j in self._frames

    def frame(self, j: int) -> np.ndarray | None:
        """Frame `j`, or the latest rendered one before it; None when there is none."""
        for k in range(j, self._oldest_kept - 1, -1):
            image = self._frames.get(k)
            if image is not None:
                return image
        return None

    def release_before(self, j: int) -> None:
        """Forget frames before `j`: they will not be shown again."""
        for k in range(self._oldest_kept, j):
            self._frames.pop(k, None)
        self._oldest_kept = max(self._oldest_kept, j)

    def release_all(self) -> None:
        self._frames.clear()
        self._oldest_kept = self.frame_count
