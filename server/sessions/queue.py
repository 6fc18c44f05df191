"""A session's speech in order: the busy policy (reject, queue, interrupt) and the queue.

The playout holds what plays now and, staged behind it, the one utterance that plays
next (so that its first frames are rendered before the current one ends and it starts on
the very next audio frame); `SpeechQueue` holds the rest, in order, and decides what a
new utterance does when the avatar is busy:

- `reject`: refused (409) while anything is pending, playing or queued;
- `queue`: played after everything before it, up to `max_queued` waiting;
- `interrupt`: what plays now is cut on the next audio frame, the queue is dropped
  (unless `keep_queue`), and the new speech starts next.

An utterance is rendered only once its turn is next (staged, or current): its frames
follow the avatar counter of the one before it, which is known exactly only then. When
the one before is cut, the staged one is placed again at the counter the cut left and
rendered again. The queue owns the render tasks it starts and cancels them.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from server.media.playout import Playout
from server.media.utterance import Utterance, UtteranceState
from server.refusal import Refusal

logger = logging.getLogger(__name__)

INTERRUPTED = "interrupted"


class SpeechMode(str, enum.Enum):
    """What a new utterance does while the avatar is busy."""

    REJECT = "reject"
    QUEUE = "queue"
    INTERRUPT = "interrupt"


class BusyError(Refusal):
    status = 409


class QueueFullError(BusyError):
    pass


@dataclass(frozen=True)
class Cut:
    """An utterance stopped before its end, and how much of its audio was sent."""

    utterance_id: str
    played_seconds: float
    duration_seconds: float


@dataclass(frozen=True)
class Admission:
    """Where a new utterance went: `position` 0 plays next (nothing before it)."""

    utterance: Utterance
    position: int
    cut: Cut | None
    dropped: list[str]


@dataclass(frozen=True)
class Interruption:
    cut: Cut | None
    dropped: list[str]
    queued: int
    """Utterances still queued (kept with `keep_queue`)."""


RenderFactory = Callable[[Utterance], Awaitable[None]]
"""An utterance's rendering: a coroutine to run as a task, or the task itself."""


class SpeechQueue:
    """The busy policy of one session over its playout, and the utterances waiting."""

    def __init__(
        self,
        playout: Playout,
        render: RenderFactory,
        max_queued: int,
        on_dropped: Callable[[Utterance, str], None],
    ) -> None:
        self._playout = playout
        self._render = render
        self.max_queued = max_queued
        self._on_dropped = on_dropped
        self._waiting: deque[Utterance] = deque()
        self._tasks: dict[Utterance, asyncio.Task[None]] = {}

    # --- looking ---------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._playout.utterance is not None

    def queued(self) -> list[Utterance]:
        """The utterances after the current one, in the order they will play."""
        upcoming = self._playout.upcoming
        return ([upcoming] if upcoming is not None else []) + list(self._waiting)

    def seconds_until_free(self) -> float:
        """An estimate of when everything pending, playing and queued will have played."""
        return self._playout.seconds_until_free() + sum(u.duration for u in self.queued())

    def check(self, mode: SpeechMode) -> None:
        """Raise the 409 a new utterance in `mode` would get now."""
        if mode is SpeechMode.REJECT and self.busy:
            wait = self.seconds_until_free()
            raise BusyError(
                f"The avatar is still speaking; it will be free in about {wait:.1f} s "
                "(or send mode=queue to play after it, mode=interrupt to cut it).",
                retry_after_seconds=round(wait, 2),
            )
        if mode is SpeechMode.QUEUE and len(self.queued()) >= self.max_queued:
            wait = self._playout.seconds_until_free()
            raise QueueFullError(
                f"{len(self.queued())} utterances are already queued, the most this server "
                f"keeps (MAX_QUEUED_UTTERANCES); a place frees in about {wait:.1f} s, "
                "or send mode=interrupt to cut in.",
                retry_after_seconds=round(wait, 2),
            )

    # --- speaking --------------------------------------------------------------------------

    def speak(self, utterance: Utterance, mode: SpeechMode, keep_queue: bool = False) -> Admission:
        """Admit `utterance` under `mode` (raises what `check` raises)."""
        self.check(mode)
        cut: Cut | None = None
        dropped: list[str] = []
        if mode is SpeechMode.INTERRUPT:
            dropped = self._make_way(keep_queue)
            self._waiting.appendleft(utterance)
            cut = self._cut(INTERRUPTED)
        else:
            self._waiting.append(utterance)
        self._advance()
        return Admission(utterance, self._position_of(utterance), cut, dropped)

    def interrupt(self, keep_queue: bool = False) -> Interruption:
        """Cut what plays now; drop the queue, or with `keep_queue` play it next."""
        dropped = self._make_way(keep_queue)
        cut = self._cut(INTERRUPTED)
        self._advance()
        return Interruption(cut, dropped, len(self.queued()))

    def clear(self, reason: str) -> None:
        """Cut what plays and drop everything queued (the connection or session ended)."""
        self._drop_queued(reason)
        self._cut(reason)

    def render_failed(self, utterance: Utterance) -> None:
        """Drop an utterance whose rendering failed; what follows it moves up."""
        if self._playout.utterance is utterance:
            self._requeue_upcoming()
            self._cut("rendering failed")
        elif self._playout.upcoming is utterance:
            self._playout.unstage()
            self._drop(utterance, "rendering failed")
        self._advance()

    def discard(self, utterance: Utterance, reason: str) -> None:
        """Drop one utterance wherever it is (streamed speech abandoned by its client)."""
        if self._playout.utterance is utterance:
            self._requeue_upcoming()
            self._cut(reason)
        elif self._playout.upcoming is utterance:
            self._playout.unstage()
            self._drop(utterance, reason)
        elif utterance in self._waiting:
            self._waiting.remove(utterance)
            self._drop(utterance, reason)
        self._advance()

    def ended(self) -> None:
        """The current utterance ended or was cut: stage what plays after the next one."""
        self._advance()

    async def close(self) -> None:
        self.clear("session ended")
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- inside ------------------------------------------------------------------------------

    def _advance(self) -> None:
        """Fill the playout from the queue: a current utterance, then a staged one."""
        playout = self._playout
        if playout.utterance is None and self._waiting:
            utterance = self._waiting.popleft()
            utterance.place(playout.next_start_counter())
            playout.accept(utterance)
            self._start_render(utterance)
        if (
            playout.utterance is not None
            and playout.utterance.complete  # a streamed one's end, hence the next start, is unknown
            and playout.upcoming is None
            and self._waiting
        ):
            utterance = self._waiting.popleft()
            utterance.place(playout.counter_after_current())
            playout.stage(utterance)
            self._start_render(utterance)

    def _cut(self, reason: str) -> Cut | None:
        playout = self._playout
        utterance = playout.utterance
        if utterance is None:
            return None
        self._stop_render(utterance)
        event = playout.cancel(reason)
        assert event is not None
        return Cut(utterance.id, round(event.played_seconds, 3), round(utterance.duration, 3))

    def _make_way(self, keep_queue: bool) -> list[str]:
        """Before a cut: drop the queue (the ids dropped), or keep it in line."""
        if not keep_queue:
            return self._drop_queued(INTERRUPTED)
        self._requeue_upcoming()
        return []

    def _requeue_upcoming(self) -> None:
        """Put the staged utterance back first in line: it is placed and rendered again."""
        upcoming = self._playout.unstage()
        if upcoming is not None:
            self._stop_render(upcoming)
            self._waiting.appendleft(upcoming)

    def _drop_queued(self, reason: str) -> list[str]:
        dropped = self.queued()
        self._playout.unstage()
        self._waiting.clear()
        for utterance in dropped:
            self._drop(utterance, reason)
        return [u.id for u in dropped]

    def _drop(self, utterance: Utterance, reason: str) -> None:
        self._stop_render(utterance)
        utterance.state = UtteranceState.CANCELLED
        utterance.release_all()
        self._on_dropped(utterance, reason)

    def _position_of(self, utterance: Utterance) -> int:
        if self._playout.utterance is utterance:
            return 0
        return 1 + self.queued().index(utterance)

    def _start_render(self, utterance: Utterance) -> None:
        task = asyncio.ensure_future(self._render(utterance))
        self._tasks[utterance] = task
        task.add_done_callback(lambda _: self._forget(utterance, task))

    def _stop_render(self, utterance: Utterance) -> None:
        task = self._tasks.pop(utterance, None)
        if task is not None:
            task.cancel()

    def _forget(self, utterance: Utterance, task: asyncio.Task[None]) -> None:
        if self._tasks.get(utterance) is task:
            del self._tasks[utterance]
