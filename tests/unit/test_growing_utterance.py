"""A growing (streamed) utterance in the playout: starts on its first frame, waits for input
with the mouth closed and in silence, ends when its client ends it."""

from __future__ import annotations

import numpy as np
import pytest

from server.media.clock import AUDIO_SAMPLES_PER_FRAME, SessionClock
from server.media.playout import Playout, PlayoutEventKind, SyncSettings
from server.media.utterance import Utterance, UtteranceState

FPS = 10
CYCLE = tuple(range(6)) + tuple(range(4, 0, -1))
FRAME_SAMPLES = 4800  # one video frame of audio at 10 fps
REBUFFER = 0.2


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def time_source() -> FakeTime:
    return FakeTime()


@pytest.fixture
def events() -> list:
    return []


@pytest.fixture
def playout(time_source: FakeTime, events: list) -> Playout:
    sync = SyncSettings(0.2, 0.08, 0.12, stream_prebuffer_seconds=0.05, stream_rebuffer_seconds=REBUFFER)
    return Playout(CYCLE, FPS, sync, SessionClock(time_source), on_event=events.append)


def voice(samples: int) -> np.ndarray:
    return np.full(samples, 0.5, np.float32)


def growing(playout: Playout, lookahead: int = 0) -> Utterance:
    utterance = Utterance(np.zeros(0, np.float32), FPS, playout.next_start_counter(), 1.0,
                          complete=False, lookahead_frames=lookahead)
    playout.accept(utterance)
    return utterance


def render_available(playout: Playout, utterance: Utterance) -> None:
    for j in range(utterance.ready, utterance.available_frames):
        utterance.add_frame(j, np.full((4, 4, 3), 200, np.uint8))
        playout.frames_added(utterance)


def pull_audio(playout: Playout, time_source: FakeTime, frames: int, start: int = 0) -> list:
    out = []
    for n in range(start, start + frames):
        time_source.now = 100.0 + n * 0.02
        out.append(playout.audio_frame(n))
    return out


def test_frames_become_renderable_as_their_audio_and_look_ahead_arrive(playout: Playout) -> None:
    utterance = growing(playout, lookahead=2)
    utterance.append(voice(2 * FRAME_SAMPLES))
    assert utterance.available_frames == 0  # frame 0 needs frames 1 and 2's audio too
    utterance.append(voice(FRAME_SAMPLES - 10))  # a resampler's few held-back samples
    assert utterance.available_frames == 1
    assert utterance.chunks == [] and not utterance.complete
    utterance.end()
    assert utterance.complete and utterance.available_frames == utterance.frame_count == 3
    assert utterance.duration == pytest.approx((3 * FRAME_SAMPLES - 10) / 48_000)


def test_speech_starts_on_its_first_frame_and_holds_in_silence_when_input_runs_dry(
    playout: Playout, time_source: FakeTime, events: list
) -> None:
    utterance = growing(playout)
    utterance.append(voice(FRAME_SAMPLES))
    render_available(playout, utterance)
    assert utterance.start_time is not None  # one frame is the streamed prebuffer

    audio = pull_audio(playout, time_source, 15)
    heard = [a is not None for a in audio]
    # Frame 0's 100 ms play (all that arrived); then it waits.
    assert heard[:5] == [True] * 5 and not any(heard[5:])
    assert playout.stats.input_underruns == 1
    assert playout.stats.input_wait_seconds == pytest.approx(10 * 0.02)
    assert [e.kind for e in events].count(PlayoutEventKind.INPUT_UNDERRUN) == 1
    # While it waits the avatar frame under the mouth is shown, not the open-mouthed frame.
    pick = playout.video_frame(time_source.now)
    assert not pick.speaking and pick.image is None
    assert pick.avatar_index == playout.avatar_index(utterance.start_counter)

    # A little input is not enough to resume (no stutter): REBUFFER seconds are needed.
    utterance.append(voice(FRAME_SAMPLES))
    render_available(playout, utterance)
    assert pull_audio(playout, time_source, 3, start=15) == [None] * 3
    utterance.append(voice(2 * FRAME_SAMPLES))
    render_available(playout, utterance)
    resumed = pull_audio(playout, time_source, 3, start=18)
    assert all(a is not None for a in resumed)
    assert [e.kind for e in events].count(PlayoutEventKind.INPUT_RESUMED) == 1
    # The audio resumes exactly where it stopped: no sample skipped.
    assert playout.position() == pytest.approx(7 * AUDIO_SAMPLES_PER_FRAME / 48_000, abs=0.021)


def test_audio_may_lead_the_renderable_frames_by_a_little(
    playout: Playout, time_source: FakeTime
) -> None:
    utterance = growing(playout, lookahead=1)
    utterance.append(voice(3 * FRAME_SAMPLES))  # frames 0 and 1 renderable; frame 2 awaits look-ahead
    render_available(playout, utterance)
    heard = [a is not None for a in pull_audio(playout, time_source, 15)]
    # 200 ms of frames plus 20 ms of the third frame's audio, then a wait.
    assert heard[:11] == [True] * 11 and not any(heard[11:])


def test_the_end_while_waiting_finishes_it_at_once(playout: Playout, time_source: FakeTime, events: list) -> None:
    utterance = growing(playout)
    utterance.append(voice(FRAME_SAMPLES))
    render_available(playout, utterance)
    pull_audio(playout, time_source, 8)
    assert utterance.state is UtteranceState.PLAYING and playout.stats.input_underruns == 1
    utterance.end()
    render_available(playout, utterance)
    pull_audio(playout, time_source, 2, start=8)
    assert utterance.state is UtteranceState.FINISHED
    assert playout.utterance is None
    assert events[-1].kind is PlayoutEventKind.SPEAKING_ENDED
    assert events[-1].played_seconds == pytest.approx(0.1)


def test_an_utterance_shorter_than_a_frame_starts_once_it_ends(playout: Playout, time_source: FakeTime) -> None:
    utterance = growing(playout)
    utterance.append(voice(1000))
    render_available(playout, utterance)
    assert utterance.start_time is None
    utterance.end()
    render_available(playout, utterance)
    assert utterance.start_time is not None
    audio = pull_audio(playout, time_source, 3)
    assert audio[0] is not None and utterance.state is UtteranceState.FINISHED


MARGIN = 0.5 / 15  # half a frame at playback 15 fps


@pytest.fixture
def margined(time_source: FakeTime, events: list) -> Playout:
    sync = SyncSettings(0.2, 0.08, 0.12, stream_prebuffer_seconds=0.05, stream_start_margin_seconds=MARGIN)
    return Playout(CYCLE, FPS, sync, SessionClock(time_source), on_event=events.append)


def test_a_streamed_start_with_no_lead_waits_the_margin_after_its_first_frames_audio(
    margined: Playout, time_source: FakeTime
) -> None:
    utterance = growing(margined)
    utterance.append(voice(FRAME_SAMPLES))  # input at real time: just the first frame's audio
    margined.input_ready(utterance)
    arrived = margined.clock.now()
    time_source.now += 0.005  # rendering took 5 ms
    render_available(margined, utterance)
    assert utterance.start_time is not None
    assert arrived + MARGIN <= utterance.start_time < arrived + MARGIN + 0.02


def test_a_streamed_start_with_enough_lead_does_not_wait(margined: Playout, time_source: FakeTime) -> None:
    utterance = growing(margined)
    utterance.append(voice(FRAME_SAMPLES + 2400))  # a TTS ahead of real time: 50 ms more
    margined.input_ready(utterance)
    arrived = margined.clock.now()
    time_source.now += 0.005
    render_available(margined, utterance)
    assert utterance.start_time is not None
    assert utterance.start_time < arrived + 0.02 + 0.005
