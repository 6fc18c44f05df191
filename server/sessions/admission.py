"""Admission control: a session, an utterance or a render is taken only when its frames fit.

The load is summed from what is live (each session's state: idle or speaking; running
renders) plus the creations still awaiting their avatar, whose slots are reserved before
any await, so that requests arriving together can never overshoot the budget. A refusal
is a `CapacityError` (503, Retry-After, a sentence); a speech request that asked to wait
is held in line instead (`speech_turn`), first come first served, until its frames fit.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from server.capacity import MIN_COST_SECONDS, CapacityModel, Load, StreamShape
from server.refusal import Refusal

if TYPE_CHECKING:
    from server.sessions.session import Session

logger = logging.getLogger(__name__)

WAIT_RECHECK_SECONDS = 0.25
"""How often a held speech request looks again (besides being woken by state changes)."""

# Why a request was refused: the `reason` label of the refusal metric and health figure.
REASON_SESSION_LIMIT = "session_limit"
REASON_SESSION_CAPACITY = "session_capacity"
REASON_SPEECH_CAPACITY = "speech_capacity"
REASON_WAIT_TIMEOUT = "wait_timeout"
REASON_RENDER_CAPACITY = "render_capacity"
REFUSAL_REASONS = (
    REASON_SESSION_LIMIT, REASON_SESSION_CAPACITY, REASON_SPEECH_CAPACITY, REASON_WAIT_TIMEOUT,
    REASON_RENDER_CAPACITY,
)


class CapacityError(Refusal):
    """The server cannot serve this in real time now, without degrading the others."""

    status = 503


class AdmissionControl:
    """The budget's bookkeeping for one server."""

    def __init__(
        self,
        model: CapacityModel,
        sessions: Callable[[], Iterable[Session]],
        retry_after_seconds: float,
        max_wait_seconds: float,
        speaking_share: float = 1.0,
    ) -> None:
        """`speaking_share`: the share of admitted sessions a new session's admission
        expects to speak at once (1: every one may, so speech is never refused for
        sessions at the parameters admitted)."""
        self.model = model
        self.speaking_share = speaking_share
        self._sessions = sessions
        self._retry_after = retry_after_seconds
        self.max_wait_seconds = max_wait_seconds
        self._reserved: dict[int, StreamShape] = {}
        self._tickets = itertools.count()
        self._renders: dict[str, Load] = {}
        self._waiting: deque[Session] = deque()
        self._changed = asyncio.Event()
        self.refusals: Counter[str] = Counter()

    # --- the load ------------------------------------------------------------------------

    def session_load(self, session: Session, speaking: bool | None = None) -> Load:
        speaking = session_is_speaking(session) if speaking is None else speaking
        return self.model.session_load(_shape(session), speaking)

    def load(self) -> Load:
        """What is asked of the budget now: each session as it is (idle or speaking), the
        creations under way as idle ones, the running renders."""
        total = Load()
        for session in self._sessions():
            if not session.closed:
                total += self.session_load(session)
        for shape in self._reserved.values():
            total += self.model.session_load(shape, speaking=False)
        for load in self._renders.values():
            total += load
        return total

    def planned_load(self, shape: StreamShape) -> Load:
        """A session of `shape` as admission counts it: idle, plus `speaking_share` of what
        speaking adds."""
        idle = self.model.session_load(shape, speaking=False)
        speaking = self.model.session_load(shape, speaking=True)
        share = self.speaking_share
        return Load(
            idle.render_fps + share * (speaking.render_fps - idle.render_fps),
            idle.encode_fps + share * (speaking.encode_fps - idle.encode_fps),
        )

    def _planned_total(self) -> Load:
        """Every admitted session and creation under way as `planned_load` counts it (one
        speaking now at least as speaking), and the running renders."""
        total = Load()
        for session in self._sessions():
            if not session.closed:
                planned = self.planned_load(_shape(session))
                actual = self.session_load(session)
                total += Load(max(planned.render_fps, actual.render_fps),
                              max(planned.encode_fps, actual.encode_fps))
        for shape in self._reserved.values():
            total += self.planned_load(shape)
        for load in self._renders.values():
            total += load
        return total

    def describe(self) -> dict[str, Any]:
        """The figures `/health` and the metrics show."""
        load = self.load()
        live = [s for s in self._sessions() if not s.closed]
        speaking = sum(1 for s in live if session_is_speaking(s))
        return {
            **self.model.describe(),
            "render_load_fps": round(load.render_fps, 1),
            "encode_load_fps": round(load.encode_fps, 1),
            "sessions_admitted": len(live),
            "sessions_idle": len(live) - speaking,
            "sessions_speaking": speaking,
            "speech_waiting": len(self._waiting),
            "renders_running": len(self._renders),
            "refusals": {reason: self.refusals[reason] for reason in REFUSAL_REASONS},
        }

    def refused(self, reason: str) -> None:
        self.refusals[reason] += 1

    # --- sessions --------------------------------------------------------------------------

    def reserve_session(self, shape: StreamShape) -> int:
        """Hold the load of a session of `shape` while it is created (raises CapacityError
        unless it fits both as it is now, idle, and as admission plans for it, with the
        others, `planned_load`); the ticket returned goes to `release_session` once it is a
        session, or failed."""
        load = self.load()
        idle = self.model.session_load(shape, speaking=False)
        if not (
            self.model.fits(load + idle)
            and self.model.fits(self._planned_total() + self.planned_load(shape))
        ):
            self.refused(REASON_SESSION_CAPACITY)
            raise CapacityError(
                f"The server is at its capacity ({self._figures(load)}); a session at "
                f"{shape.playback_fps} frames/s does not fit now. Try again in a moment, "
                "with a lower playback_fps, or on another server.",
                # Sessions last minutes: what frees room for one is mostly another ending.
                retry_after_seconds=self._retry_after,
                reason=REASON_SESSION_CAPACITY,
            )
        ticket = next(self._tickets)
        self._reserved[ticket] = shape
        return ticket

    def release_session(self, ticket: int) -> None:
        del self._reserved[ticket]

    # --- speech ------------------------------------------------------------------------------

    def check_speech(self, session: Session) -> None:
        """Raise CapacityError unless `session` may start speaking now (one already
        speaking may always queue or interrupt: it adds no load)."""
        if session_is_speaking(session):
            return
        if self._waiting and self._waiting[0] is not session:
            self.refused(REASON_SPEECH_CAPACITY)
            raise CapacityError(
                f"{len(self._waiting)} other speech requests wait for the server's capacity "
                f"({self._figures(self.load())}); try again in a moment, or send wait=true "
                "to wait in line.",
                retry_after_seconds=self._seconds_until_speech_ends(),
                reason=REASON_SPEECH_CAPACITY,
            )
        if not self._speech_fits(session):
            self.refused(REASON_SPEECH_CAPACITY)
            raise CapacityError(
                f"The server is at its capacity ({self._figures(self.load())}): this "
                "session's speech would slow down every other session. Try again in a "
                "moment, or send wait=true to wait in line.",
                retry_after_seconds=self._seconds_until_speech_ends(),
                reason=REASON_SPEECH_CAPACITY,
            )

    def _speech_fits(self, session: Session) -> bool:
        if session_is_speaking(session):
            return True
        without = self.load() - self.session_load(session)
        return self.model.fits(without + self.session_load(session, speaking=True))

    @asynccontextmanager
    async def speech_turn(
        self, session: Session, on_position: Callable[[int], None]
    ) -> AsyncIterator[None]:
        """Hold until `session` is first in line and its speech fits (at most
        `max_wait_seconds`, then CapacityError), and keep its place while the body runs:
        the body must admit the speech (`session.speak`) before any await. `on_position`
        is told each new place in line (1: next)."""
        self._waiting.append(session)
        try:
            await self._wait_turn(session, on_position)
            yield
        finally:
            self._waiting.remove(session)
            self.changed()

    async def _wait_turn(self, session: Session, on_position: Callable[[int], None]) -> None:
        deadline = time.monotonic() + self.max_wait_seconds
        told: int | None = None
        while True:
            if session.closed:
                return  # its speak() refuses it (404)
            position = self._waiting.index(session) + 1
            if position == 1 and self._speech_fits(session):
                return
            if position != told:
                on_position(position)
                told = position
            left = deadline - time.monotonic()
            if left <= 0:
                self.refused(REASON_WAIT_TIMEOUT)
                raise CapacityError(
                    f"Waited {self.max_wait_seconds:g} s (CAPACITY_MAX_WAIT_SECONDS) for the "
                    f"server's capacity ({self._figures(self.load())}) in vain; try again "
                    "later or on another server.",
                    retry_after_seconds=self._seconds_until_speech_ends(),
                    reason=REASON_WAIT_TIMEOUT,
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, WAIT_RECHECK_SECONDS))
            except TimeoutError:
                pass

    def changed(self) -> None:
        """Something that frees load happened (a session went idle or ended)."""
        self._changed.set()

    # --- renders -----------------------------------------------------------------------------

    def render_load(self, fps: int) -> Load:
        costs = self.model.costs
        # Its frames are encoded too (into the MP4), about as dear as a VP8 frame.
        render_cpu = fps * costs.render_seconds / max(costs.encode_seconds, MIN_COST_SECONDS)
        return Load(float(fps), fps + (render_cpu if costs.render_uses_cpu else 0.0))

    def check_render(self, fps: int) -> None:
        """Raise CapacityError unless a render at `fps` frames/s fits now."""
        load = self.load()
        if not self.model.fits(load + self.render_load(fps)):
            self.refused(REASON_RENDER_CAPACITY)
            raise CapacityError(
                f"The server is at its capacity ({self._figures(load)}); a render at {fps} "
                "frames/s does not fit now. Try again in a moment, or with a lower fps.",
                retry_after_seconds=self._seconds_until_speech_ends(),
                reason=REASON_RENDER_CAPACITY,
            )

    def render_started(self, render_id: str, fps: int) -> None:
        """Count a running render in the load (its frames come after every live one's:
        it slows down, live sessions do not)."""
        self._renders[render_id] = self.render_load(fps)

    def release_render(self, render_id: str) -> None:
        if self._renders.pop(render_id, None) is not None:
            self.changed()

    # --- inside ------------------------------------------------------------------------------

    def _figures(self, load: Load) -> str:
        budget = self.model.budget
        return (
            f"render {load.render_fps:.0f} of {budget.render_fps:.0f} frames/s, "
            f"encode {load.encode_fps:.0f} of {budget.encode_fps:.0f} frames/s"
        )

    def _seconds_until_speech_ends(self) -> float:
        """When the soonest speaking session will be free: the likeliest time load frees."""
        waits = [
            s.playout.seconds_until_free() for s in self._sessions()
            if not s.closed and session_is_speaking(s)
        ]
        return round(max(1.0, min(waits)) if waits else self._retry_after, 2)


def _shape(session: Session) -> StreamShape:
    width, height = session.avatar.avatar.size
    return StreamShape(session.params.fps, session.params.playback_fps, width, height)


def session_is_speaking(session: Session) -> bool:
    """Whether the session renders now (an utterance is pending, playing or staged)."""
    return session.playout.utterance is not None
