"""What a session shows and plays at each media time: idle loop, speech, and A/V sync."""

from __future__ import annotations

import enum
import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from server.media.clock import (
    AUDIO_PTIME,
    AUDIO_SAMPLE_RATE,
    AUDIO_SAMPLES_PER_FRAME,
    TIME_EPSILON,
    SessionClock,
    audio_frame_at_or_after,
    audio_frame_time,
    frame_index,
)
from server.media.utterance import Utterance, UtteranceState

# Until a session has measured how long its utterances take from acceptance to the first
# audible sample, assume this; the first avatar frame of speech is picked with it.
INITIAL_START_DELAY = 0.12
START_DELAY_SMOOTHING = 0.3  # weight of the newest measurement in the running estimate


@dataclass(frozen=True)
class SyncSettings:
    prebuffer_seconds: float = 0.2
    max_lead_seconds: float = 0.08
    max_lag_seconds: float = 0.12
    stream_prebuffer_seconds: float = 0.05
    """For streamed speech: renderable audio needed before it starts (at least a frame)."""
    stream_rebuffer_seconds: float = 0.2
    """For streamed speech whose input ran dry: renderable audio needed to resume."""
    stream_max_lead_seconds: float = 0.02
    """How far streamed audio may play past the frames its input lets render (the frame
    before is shown meanwhile): a little slack against the frame grid, well within sync."""
    stream_start_margin_seconds: float = 0.0
    """For streamed speech: the audio it needs beyond its first frames' before it starts,
    or, short of that, the time it waits after they arrived. Input at real time keeps the
    lead it had at the start, and the video shows some frames before their time: with
    less lead than the most any is early, those would be late (`stream_start_margin`)."""


@dataclass
class SyncStats:
    """Sync events of a session, exposed by the API."""

    utterances_started: int = 0
    utterances_finished: int = 0
    utterances_cancelled: int = 0
    audio_holds: int = 0
    """Times the audio paused (sent silence) because rendering fell behind by > max lead."""
    audio_hold_seconds: float = 0.0
    video_frames_late: int = 0
    """Video frames that repeated an older frame because theirs was not rendered yet."""
    video_frames_held: int = 0
    """Video frames held back because the audio was sent more than max lag behind them."""
    speech_seconds: float = 0.0
    """Seconds of speech audio sent."""
    last_start_delay: float | None = None
    """Seconds from accepting the last utterance to its first audible sample."""
    input_underruns: int = 0
    """Times streamed speech ran out of input: the avatar held, mouth closed, in silence."""
    input_wait_seconds: float = 0.0
    """Seconds of silence sent while streamed speech waited for its input."""


class PlayoutEventKind(enum.Enum):
    SPEAKING_STARTED = "speaking_started"
    SPEAKING_ENDED = "speaking_ended"
    UTTERANCE_CANCELLED = "utterance_cancelled"
    INPUT_UNDERRUN = "input_underrun"
    INPUT_RESUMED = "input_resumed"


@dataclass(frozen=True)
class PlayoutEvent:
    kind: PlayoutEventKind
    utterance_id: str
    media_time: float
    played_seconds: float = 0.0
    """Seconds of the utterance's audio sent (all of it once it ended)."""
    reason: str | None = None
    """Why it was cancelled (`cancel`'s reason)."""
    duration_seconds: float = 0.0
    start_delay: float | None = None
    """For speaking_started: seconds from acceptance to this first audible sample, when
    that measures rendering (not for an utterance that waited behind another)."""
    waited_seconds: float = 0.0
    """For input_resumed: seconds the streamed utterance waited for its input."""


@dataclass(frozen=True)
class VideoPick:
    """The picture for one video frame: a rendered speech frame, or an avatar frame."""

    image: np.ndarray | None
    avatar_index: int
    speaking: bool


@dataclass(frozen=True)
class _Anchor:
    """Where an utterance's audio was at a media time: the audio is the master clock."""

    time: float
    position: float  # utterance seconds
    holding: bool
    starved: bool = False  # holding because streamed input has not arrived: mouth closed


class Playout:
    """A session's media state, pulled by its audio and video tracks at media times.

    The idle loop walks the avatar's ping-pong cycle at `fps` frames per second; an
    avatar frame *counter* keeps counting through speech so that the first speaking frame
    continues from the idle loop and the idle loop resumes where speech ended.

    During speech the audio is the master: each audio frame records an anchor (media
    time, utterance position) and each video frame shows the rendered frame for the
    position the audio is at at that frame's media time.

    One utterance may be *staged* behind the current one (`stage`): it is rendered from
    the counter the current one ends on, and starts on the audio frame right after the
    current one's last, with no idle frame or silence in between once its first frames
    are rendered. What waits further back is the session's queue's business.
    """

    def __init__(
        self,
        cycle: Sequence[int],
        fps: float,
        sync: SyncSettings,
        clock: SessionClock,
        on_event: Callable[[PlayoutEvent], None] | None = None,
    ) -> None:
        if not cycle:
            raise ValueError("the avatar cycle is empty")
        self._cycle = list(cycle)
        self.fps = fps
        self.sync = sync
        self.clock = clock
        self.stats = SyncStats()
        self._on_event = on_event
        self._idle_anchor = (0.0, 0)  # (media time, avatar counter)
        self._utterance: Utterance | None = None
        self._upcoming: Utterance | None = None
        self._measure_start = True  # whether the current one's start delay is measured
        self._anchor: _Anchor | None = None
        self._position = 0  # samples of the current utterance sent
        self._holding = False
        self._starved_since: float | None = None  # media time streamed input ran dry
        # The last finished utterance, for video frames that are still before its end.
        self._finished: tuple[Utterance, _Anchor] | None = None
        self._audio_next = 0  # index of the next audio frame expected
        self._video_last_time = -math.inf
        self._start_delay = INITIAL_START_DELAY
        self.frame_events: weakref.WeakSet[Any] = weakref.WeakSet()
        """Events set each time frames are rendered (a video track waiting for one)."""
        self.start_events: weakref.WeakSet[Any] = weakref.WeakSet()
        """Events (asyncio.Event) set each time an utterance's start time is set: a video
        track moves its frame grid to it. Weak: a track that is dropped needs no goodbye."""

    # --- avatar frame counter -------------------------------------------------------

    def avatar_index(self, counter: int) -> int:
        return self._cycle[counter % len(self._cycle)]

    def idle_counter(self, t: float) -> int:
        """The avatar counter the idle loop shows at media time `t`, as things stand now."""
        return self._idle_counter(t)

    def _idle_counter(self, t: float) -> int:
        t0, p0 = self._idle_anchor
        counter = p0 + frame_index(t - t0, self.fps)
        utterance = self._utterance
        if utterance is not None and utterance.state is UtteranceState.PENDING:
            # Wait at the frame speech will start from rather than run past it.
            counter = min(counter, utterance.start_counter)
        return counter

    # --- utterances -------------------------------------------------------------------

    @property
    def utterance(self) -> Utterance | None:
        """The utterance pending or playing, if any."""
        return self._utterance

    @property
    def upcoming(self) -> Utterance | None:
        """The utterance staged to start right after the current one, if any."""
        return self._upcoming

    def next_start_counter(self) -> int:
        """The avatar counter the next utterance should start from, if accepted now."""
        now = self.clock.now()
        return max(self._idle_counter(now), self._idle_counter(now + self._start_delay))

    def counter_after_current(self) -> int:
        """The avatar counter right after the current utterance's last frame."""
        if self._utterance is None:
            raise RuntimeError("no utterance is pending or playing")
        return self._utterance.start_counter + self._utterance.frame_count

    def accept(self, utterance: Utterance) -> None:
        if self._utterance is not None:
            raise RuntimeError("an utterance is already pending or playing")
        self._make_current(utterance)
        # A streamed one waits for its client's audio: that is no measure of rendering.
        self._measure_start = not utterance.streamed

    def stage(self, utterance: Utterance) -> None:
        """Play `utterance` right after the current one; place it at `counter_after_current`."""
        if self._utterance is None:
            raise RuntimeError("nothing is pending or playing to follow")
        if self._upcoming is not None:
            raise RuntimeError("an utterance is already staged")
        self._upcoming = utterance

    def unstage(self) -> Utterance | None:
        """Take the staged utterance back (its frames follow a counter that no longer holds)."""
        utterance, self._upcoming = self._upcoming, None
        return utterance

    def _make_current(self, utterance: Utterance) -> None:
        utterance.accepted_at = self.clock.now()
        self._utterance = utterance
        self._anchor = None
        self._position = 0
        self._holding = False
        self._starved_since = None

    def prebuffer_frames(self, utterance: Utterance) -> int:
        """Frames that must be rendered before `utterance` may start playing."""
        if not utterance.complete:
            return max(1, math.ceil(self.sync.stream_prebuffer_seconds * utterance.fps - TIME_EPSILON))
        wanted = math.ceil(self.sync.prebuffer_seconds * utterance.fps - TIME_EPSILON)
        return min(utterance.frame_count, max(1, wanted))

    def frames_added(self, utterance: Utterance) -> None:
        """Tell the playout that frames of `utterance` were rendered."""
        for event in list(self.frame_events):
            event.set()
        if (
            utterance is self._utterance
            and utterance.state is UtteranceState.PENDING
            and utterance.start_time is None
            and utterance.ready >= self.prebuffer_frames(utterance)
        ):
            # Start on the first audio frame neither track has produced yet, so both
            # see the whole utterance from its first sample.
            earliest = max(
                self.clock.now(),
                audio_frame_time(self._audio_next),
                self._video_last_time + TIME_EPSILON,
            )
            if utterance.earliest_start is not None:
                earliest = max(earliest, utterance.earliest_start)
            start = audio_frame_time(audio_frame_at_or_after(earliest))
            utterance.start_time = start
            self._anchor = _Anchor(start, 0.0, holding=False)
            self._tell_start()

    def scheduled_start(self) -> float | None:
        """The media time the current utterance starts (or started) at, once it is set."""
        utterance = self._utterance
        return None if utterance is None else utterance.start_time

    def _tell_start(self) -> None:
        for event in list(self.start_events):
            event.set()

    def input_ready(self, utterance: Utterance) -> None:
        """Tell the playout that a streamed utterance's audio for its first frames (its
        prebuffer) has arrived: it starts once its lead beyond them (what arrived more)
        and the time since make `stream_start_margin_seconds`."""
        if utterance.earliest_start is not None:
            return
        lead = utterance.received / AUDIO_SAMPLE_RATE - self.prebuffer_frames(utterance) / utterance.fps
        wait = max(0.0, self.sync.stream_start_margin_seconds - lead)
        utterance.earliest_start = self.clock.now() + wait

    def cancel(self, reason: str = "cancelled") -> PlayoutEvent | None:
        """Drop the current utterance at once: the next audio frame is silence, and the
        idle loop continues from the frame it was on. The staged one is unstaged too.

        The avatar counter keeps the pace speech had: the video shows the counter of the
        frame on screen until that frame's time is over, then the idle frames after it.
        """
        self._upcoming = None
        utterance = self._utterance
        if utterance is None:
            return None
        now = self.clock.now()
        played = 0.0
        if utterance.state is UtteranceState.PLAYING and self._anchor is not None:
            position = self._speech_position(now, self._anchor, count=False)
            shown = min(frame_index(position, self.fps), utterance.frame_count - 1)
            shown_until = now + max(0.0, (shown + 1) / self.fps - position)
            self._idle_anchor = (shown_until, utterance.start_counter + shown + 1)
            played = min(self._position, len(utterance.samples)) / AUDIO_SAMPLE_RATE
        else:
            self._idle_anchor = (now, self._idle_counter(now))
        utterance.state = UtteranceState.CANCELLED
        utterance.release_all()
        self._utterance = None
        self._anchor = None
        self.stats.utterances_cancelled += 1
        return self._emit(PlayoutEventKind.UTTERANCE_CANCELLED, utterance, now, played, reason)

    def position(self) -> float:
        """Utterance seconds audible now (0 before the current utterance starts)."""
        if self._utterance is None or self._anchor is None:
            return 0.0
        return self._speech_position(self.clock.now(), self._anchor, count=False)

    def frame_due(self, utterance: Utterance, j: int) -> float:
        """The media time frame `j` of `utterance` is expected to be shown at."""
        offset = j / utterance.fps
        current = self._utterance
        if utterance is self._upcoming and current is not None:
            return self.frame_due(current, 0) + current.duration + offset
        anchor = self._anchor if utterance is self._utterance else None
        if anchor is not None:
            base = max(anchor.time, self.clock.now()) if anchor.holding else anchor.time
            return base + offset - anchor.position
        accepted = utterance.accepted_at if utterance.accepted_at is not None else self.clock.now()
        return accepted + self._start_delay + offset

    def frame_wanted(self, utterance: Utterance, j: int, due: float | None = None) -> float:
        """The media time frame `j` of `utterance` is wanted rendered by: its due time
        (`frame_due`, or `due` when the caller has it), or the utterance's acceptance for
        the frames its start waits for.

        A start that has not been set is as early as those frames make it, so they are
        wanted at once: due at an estimated start, they would queue behind other sessions'
        frames due sooner, and each start delayed that way would make the estimate longer.
        """
        if (
            utterance is self._utterance
            and utterance.start_time is None
            and utterance.accepted_at is not None
            and j < self.prebuffer_frames(utterance)
        ):
            return utterance.accepted_at
        return self.frame_due(utterance, j) if due is None else due

    def seconds_until_free(self) -> float:
        """An estimate of when the current utterance will have finished playing."""
        utterance = self._utterance
        if utterance is None:
            return 0.0
        if utterance.state is UtteranceState.PENDING or self._anchor is None:
            waited = self.clock.now() - (utterance.accepted_at or self.clock.now())
            return max(0.0, self._start_delay - waited) + utterance.duration
        played = self._speech_position(self.clock.now(), self._anchor, count=False)
        return max(0.0, utterance.duration - played)

    # --- audio ---------------------------------------------------------------------------

    def audio_frame(self, n: int) -> np.ndarray | None:
        """The 960 samples (float32) of audio frame `n`, or None for silence."""
        if n < self._audio_next:
            return None  # a stale track asking again; never consume audio twice
        self._audio_next = n + 1
        t = audio_frame_time(n)
        utterance = self._utterance
        if utterance is None or utterance.start_time is None:
            return None
        if utterance.state is UtteranceState.PENDING:
            if t < utterance.start_time - TIME_EPSILON:
                return None
            self._begin(utterance, t)
        if utterance.state is not UtteranceState.PLAYING:
            return None

        position = self._position
        seconds = position / AUDIO_SAMPLE_RATE
        if utterance.complete and position >= len(utterance.samples):
            # A streamed one whose end came while it waited for input: it ends here.
            self._finish(utterance, t, t)
            return None
        if self._input_starved(utterance, t, seconds):
            return None
        rendered_until = utterance.ready / utterance.fps
        audio_until = (position + AUDIO_SAMPLES_PER_FRAME) / AUDIO_SAMPLE_RATE
        behind = not utterance.complete or utterance.ready < utterance.frame_count
        if behind and audio_until - rendered_until > self.sync.max_lead_seconds + TIME_EPSILON:
            if not self._holding:
                self.stats.audio_holds += 1
            self._holding = True
            self.stats.audio_hold_seconds += AUDIO_PTIME
            self._anchor = _Anchor(t, seconds, holding=True)
            return None

        self._holding = False
        self._anchor = _Anchor(t, seconds, holding=False)
        samples = utterance.samples[position : position + AUDIO_SAMPLES_PER_FRAME]
        self._position = position + AUDIO_SAMPLES_PER_FRAME
        self.stats.speech_seconds += len(samples) / AUDIO_SAMPLE_RATE
        if utterance.complete and self._position >= len(utterance.samples):
            self._finish(utterance, t + len(samples) / AUDIO_SAMPLE_RATE, audio_frame_time(n + 1))
        if len(samples) < AUDIO_SAMPLES_PER_FRAME:
            samples = np.pad(samples, (0, AUDIO_SAMPLES_PER_FRAME - len(samples)))
        return samples

    def _input_starved(self, utterance: Utterance, t: float, seconds: float) -> bool:
        """Whether a streamed utterance must wait for input at media time `t`: its next
        audio frame would pass the frames its input lets render. It then sends silence and
        shows the avatar frame it is on with the mouth closed, until `stream_rebuffer_seconds`
        more can be rendered (or the input ended)."""
        if utterance.complete and self._starved_since is None:
            return False
        renderable = utterance.available_frames / utterance.fps
        received = utterance.received / AUDIO_SAMPLE_RATE
        playable = min(received, renderable + self.sync.stream_max_lead_seconds)
        if self._starved_since is not None:
            ahead = renderable - seconds
            resume = utterance.complete or ahead >= self.sync.stream_rebuffer_seconds - TIME_EPSILON
            if resume:
                waited = t - self._starved_since
                self._starved_since = None
                self._emit_input(PlayoutEventKind.INPUT_RESUMED, utterance, t, seconds, waited)
                return False
        elif seconds + AUDIO_PTIME > playable + TIME_EPSILON:
            self._starved_since = t
            self.stats.input_underruns += 1
            self._emit_input(PlayoutEventKind.INPUT_UNDERRUN, utterance, t, seconds, 0.0)
        else:
            return False
        self.stats.input_wait_seconds += AUDIO_PTIME
        self._anchor = _Anchor(t, seconds, holding=True, starved=True)
        return True

    def _emit_input(
        self, kind: PlayoutEventKind, utterance: Utterance, t: float, seconds: float, waited: float
    ) -> None:
        if self._on_event is not None:
            self._on_event(
                PlayoutEvent(kind, utterance.id, t, seconds, duration_seconds=utterance.duration,
                             waited_seconds=waited)
            )

    def _begin(self, utterance: Utterance, t: float) -> None:
        utterance.state = UtteranceState.PLAYING
        if self._measure_start:  # a staged one's wait for its turn says nothing of rendering
            delay = t - (utterance.accepted_at if utterance.accepted_at is not None else t)
            self.stats.last_start_delay = delay
            self._start_delay += START_DELAY_SMOOTHING * (delay - self._start_delay)
        self.stats.utterances_started += 1
        self._emit(
            PlayoutEventKind.SPEAKING_STARTED, utterance, t,
            start_delay=delay if self._measure_start else None,
        )

    def _finish(self, utterance: Utterance, end_time: float, next_frame_time: float) -> None:
        utterance.state = UtteranceState.FINISHED
        utterance.end_time = end_time
        assert self._anchor is not None
        self._finished = (utterance, self._anchor)
        self._idle_anchor = (end_time, utterance.start_counter + utterance.frame_count)
        self._utterance = None
        self._anchor = None
        self.stats.utterances_finished += 1
        self._promote_upcoming(next_frame_time)
        self._emit(PlayoutEventKind.SPEAKING_ENDED, utterance, end_time, utterance.duration)

    def _promote_upcoming(self, start: float) -> None:
        """Make the staged utterance current; it starts at `start` (the audio frame after
        the last one's end) if its first frames are rendered, else once they are."""
        utterance, self._upcoming = self._upcoming, None
        if utterance is None:
            return
        self._make_current(utterance)
        self._measure_start = False
        if utterance.ready >= self.prebuffer_frames(utterance):
            utterance.start_time = start
            self._anchor = _Anchor(start, 0.0, holding=False)
            self._tell_start()

    # --- video ---------------------------------------------------------------------------

    def video_frame(self, t: float) -> VideoPick:
        """The picture for the video frame at media time `t`."""
        self._video_last_time = max(self._video_last_time, t)
        speaking = self._speaking_at(t, count=True)
        if speaking is not None:
            utterance, anchor, position = speaking
            if anchor.starved:
                return self._idle_pick(utterance.start_counter + _frame_at(utterance, position))
            if position < utterance.duration or not utterance.complete:
                return self._speech_pick(utterance, position)
            # The audio is about to finish: continue the idle loop from its end.
            end = anchor.time + (utterance.duration - anchor.position)
            counter = utterance.start_counter + utterance.frame_count
            return self._idle_pick(counter + frame_index(t - end, self.fps))
        if self._finished is not None:
            finished, last_anchor = self._finished
            assert finished.end_time is not None
            if t < finished.end_time - TIME_EPSILON:
                position = self._speech_position(t, last_anchor, count=False)
                return self._speech_pick(finished, min(position, finished.duration - 1e-9))
            finished.release_all()
            self._finished = None
        return self._idle_pick(self._idle_counter(t))

    def frame_pending(self, t: float) -> bool:
        """Whether the speech frame for media time `t` is being rendered: not there yet,
        though its audio has arrived (the video may wait a moment for it rather than
        show the frame before a tick longer)."""
        speaking = self._speaking_at(t, count=False)
        if speaking is None:
            return False
        utterance, anchor, position = speaking
        if anchor.starved or (utterance.complete and position >= utterance.duration):
            return False
        j = _frame_at(utterance, position)
        return j < utterance.available_frames and not utterance.has_frame(j)

    def _speaking_at(self, t: float, count: bool) -> tuple[Utterance, _Anchor, float] | None:
        """The current utterance, its anchor and its position audible at media time `t`,
        once it has started by then (`count`: a held video frame counts in the stats)."""
        utterance, anchor = self._utterance, self._anchor
        if (
            utterance is None
            or anchor is None
            or utterance.start_time is None
            or t < utterance.start_time - TIME_EPSILON
        ):
            return None
        return utterance, anchor, self._speech_position(t, anchor, count)

    def _idle_pick(self, counter: int) -> VideoPick:
        return VideoPick(None, self.avatar_index(counter), speaking=False)

    def _speech_pick(self, utterance: Utterance, position: float) -> VideoPick:
        j = _frame_at(utterance, position)
        image = utterance.frame(j)
        if image is None:
            return self._idle_pick(utterance.start_counter + j)
        if utterance.has_frame(j):
            utterance.release_before(j)
        else:
            # Frame j is late and an older one is repeated: keep that one for the next
            # pick too, or the idle frame would flash in the middle of speech.
            self.stats.video_frames_late += 1
        return VideoPick(image, self.avatar_index(utterance.start_counter + j), speaking=True)

    def _speech_position(self, t: float, anchor: _Anchor, count: bool) -> float:
        """Utterance seconds audible at media time `t`, extrapolated from the audio."""
        if anchor.holding:
            return anchor.position
        position = anchor.position + max(0.0, t - anchor.time)
        # If the audio track has not been pulled for a while, do not run ahead of it.
        limit = anchor.position + AUDIO_PTIME + self.sync.max_lag_seconds
        if position > limit:
            if count:
                self.stats.video_frames_held += 1
            position = limit
        return position

    def _emit(
        self,
        kind: PlayoutEventKind,
        utterance: Utterance,
        t: float,
        played: float = 0.0,
        reason: str | None = None,
        start_delay: float | None = None,
    ) -> PlayoutEvent:
        event = PlayoutEvent(kind, utterance.id, t, played, reason, utterance.duration, start_delay)
        if self._on_event is not None:
            self._on_event(event)
        return event


def _frame_at(utterance: Utterance, position: float) -> int:
    """The utterance's frame for `position` seconds into it (its last one past its end)."""
    return min(frame_index(position, utterance.fps), utterance.frame_count - 1)
