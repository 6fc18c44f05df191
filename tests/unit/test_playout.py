"""The playout: idle loop, speech start, audio-master sync, continuity, holds."""

from __future__ import annotations

import numpy as np
import pytest

from server.media.clock import AUDIO_SAMPLES_PER_FRAME, SessionClock
from server.media.playout import Playout, PlayoutEventKind, SyncSettings
from server.media.utterance import Utterance, UtteranceState

FPS = 10
CYCLE = tuple(range(6)) + tuple(range(4, 0, -1))  # ping-pong over 6 frames


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
    clock = SessionClock(time_source)
    return Playout(CYCLE, FPS, SyncSettings(0.2, 0.08, 0.12), clock, on_event=events.append)


def frame_image(j: int) -> np.ndarray:
    return np.full((4, 4, 3), j, np.uint8)


def make_utterance(playout: Playout, seconds: float) -> Utterance:
    samples = np.linspace(0.1, 0.9, int(seconds * 48_000), dtype=np.float32)
    return Utterance(samples, FPS, playout.next_start_counter(), chunk_duration=1.0)


def render(playout: Playout, utterance: Utterance, frames: range) -> None:
    for j in frames:
        utterance.add_frame(j, frame_image(j))
        playout.frames_added(utterance)


def test_idle_loop_walks_the_ping_pong_cycle_at_fps(playout: Playout) -> None:
    picks = [playout.video_frame(k / 30) for k in range(60)]  # 2 s at 30 fps playback
    indices = [p.avatar_index for p in picks]
    assert indices[::3][:12] == [0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0, 1]
    assert not any(p.speaking or p.image is not None for p in picks)


def test_idle_audio_is_silence(playout: Playout) -> None:
    assert all(playout.audio_frame(n) is None for n in range(100))


def test_speech_starts_on_the_next_audio_frame_once_the_prebuffer_is_rendered(
    playout: Playout, time_source: FakeTime, events: list
) -> None:
    time_source.now += 1.0
    for n in range(50):
        playout.audio_frame(n)
    utterance = make_utterance(playout, 1.0)
    playout.accept(utterance)
    render(playout, utterance, range(1))
    assert utterance.start_time is None  # 0.2 s at 10 fps: two frames needed
    time_source.now += 0.013
    render(playout, utterance, range(1, 2))
    assert utterance.start_time == pytest.approx(1.02)  # first audio frame not yet sent
    assert playout.audio_frame(50) is None  # 1.00 s: before the start
    first = playout.audio_frame(51)
    assert first is not None and len(first) == AUDIO_SAMPLES_PER_FRAME
    np.testing.assert_array_equal(first, utterance.samples[:AUDIO_SAMPLES_PER_FRAME])
    assert [e.kind for e in events] == [PlayoutEventKind.SPEAKING_STARTED]
    assert utterance.state is UtteranceState.PLAYING


def test_audio_is_contiguous_and_ends_with_the_utterance(playout: Playout, events: list) -> None:
    utterance = make_utterance(playout, 0.5)
    playout.accept(utterance)
    render(playout, utterance, range(utterance.frame_count))
    sent = [playout.audio_frame(n) for n in range(40)]
    audible = [s for s in sent if s is not None]
    assert len(audible) == 25  # 0.5 s of 20 ms frames
    np.testing.assert_array_equal(np.concatenate(audible), utterance.samples)
    assert events[-1].kind is PlayoutEventKind.SPEAKING_ENDED
    assert events[-1].media_time == pytest.approx(utterance.start_time + 0.5)
    assert playout.utterance is None
    assert playout.stats.utterances_finished == 1


def test_video_shows_the_frame_for_the_audio_position(playout: Playout) -> None:
    utterance = make_utterance(playout, 1.0)
    playout.accept(utterance)
    render(playout, utterance, range(utterance.frame_count))
    start = utterance.start_time
    for n in range(100):
        t = n * 0.02
        playout.audio_frame(n)
        if t >= start:
            pick = playout.video_frame(t + 0.01)
            expected = min(int((t + 0.01 - start) * FPS + 1e-9), utterance.frame_count - 1)
            if t + 0.01 < start + 1.0:
                assert pick.speaking
                assert pick.image[0, 0, 0] == expected


def test_speech_continues_the_idle_loop_and_idle_resumes_after_it(
    playout: Playout, time_source: FakeTime
) -> None:
    # Idle counter at 0.35 s is 3; speech accepted then starts from the counter reached.
    time_source.now += 0.35
    for n in range(18):
        playout.audio_frame(n)
    counter_before = playout.video_frame(0.35).avatar_index
    utterance = make_utterance(playout, 0.3)
    playout.accept(utterance)
    assert utterance.start_counter >= 3
    render(playout, utterance, range(utterance.frame_count))
    start = utterance.start_time
    first = playout.video_frame(start)
    assert first.speaking
    assert first.avatar_index == playout.avatar_index(utterance.start_counter)
    assert abs(CYCLE.index(first.avatar_index) - CYCLE.index(counter_before)) <= 1
    # Play it out, then the idle loop continues from the frame after the last spoken one.
    n = 18
    while playout.utterance is not None:
        playout.audio_frame(n)
        n += 1
    end = utterance.end_time
    after = playout.video_frame(end + 0.001)
    assert not after.speaking
    assert after.avatar_index == playout.avatar_index(utterance.start_counter + utterance.frame_count)


def test_idle_loop_waits_at_the_start_frame_while_rendering(playout: Playout, time_source: FakeTime) -> None:
    utterance = make_utterance(playout, 1.0)
    playout.accept(utterance)
    start_counter = utterance.start_counter
    later = playout.video_frame(5.0)  # rendering is taking long: hold, do not run past
    assert later.avatar_index == playout.avatar_index(start_counter)


def test_audio_holds_when_rendering_falls_behind_and_resumes(playout: Playout) -> None:
    utterance = make_utterance(playout, 1.0)
    playout.accept(utterance)
    render(playout, utterance, range(3))  # 0.3 s of video
    sent = []
    for n in range(30):
        sent.append(playout.audio_frame(n))
    # Audio may lead the last rendered frame by at most 80 ms: 0.3 + 0.08 = 0.38 s played.
    played = sum(s is not None for s in sent)
    assert played == 19  # 0.38 s / 20 ms
    assert playout.stats.audio_holds == 1
    assert playout.stats.audio_hold_seconds == pytest.approx(11 * 0.02)
    held_at = playout.video_frame(30 * 0.02)
    assert held_at.image[0, 0, 0] == 2  # the lips wait with the audio
    render(playout, utterance, range(3, utterance.frame_count))
    resumed = playout.audio_frame(30)
    np.testing.assert_array_equal(
        resumed, utterance.samples[19 * AUDIO_SAMPLES_PER_FRAME : 20 * AUDIO_SAMPLES_PER_FRAME]
    )


def test_a_late_frame_repeats_the_last_rendered_one_until_it_arrives(playout: Playout) -> None:
    utterance = make_utterance(playout, 1.0)
    playout.accept(utterance)
    render(playout, utterance, range(3))
    for n in range(30):
        playout.audio_frame(n)  # holds at 0.38 s: frame 3 is due but not rendered
    picks = [playout.video_frame(0.6 + k / 30) for k in range(5)]
    assert all(p.speaking and p.image[0, 0, 0] == 2 for p in picks)
    assert playout.stats.video_frames_late == 5


def test_video_does_not_run_ahead_of_stalled_audio(playout: Playout) -> None:
    utterance = make_utterance(playout, 2.0)
    playout.accept(utterance)
    render(playout, utterance, range(utterance.frame_count))
    start = utterance.start_time
    playout.audio_frame(0)  # only the first audio frame is ever sent
    pick = playout.video_frame(start + 0.5)
    # 20 ms sent + 120 ms allowed lag: frame 1 (0.1..0.2 s), not frame 5.
    assert pick.image[0, 0, 0] == 1
    assert playout.stats.video_frames_held == 1


def test_cancel_returns_to_idle_after_the_frame_shown(playout: Playout, events: list) -> None:
    utterance = make_utterance(playout, 2.0)
    playout.accept(utterance)
    render(playout, utterance, range(utterance.frame_count))
    for n in range(20):  # 0.4 s
        playout.audio_frame(n)
    playout.cancel()
    assert utterance.state is UtteranceState.CANCELLED
    assert events[-1].kind is PlayoutEventKind.UTTERANCE_CANCELLED
    assert playout.utterance is None
    assert playout.audio_frame(20) is None
    assert not playout.video_frame(0.5).speaking


def test_a_stale_audio_track_never_consumes_speech_twice(playout: Playout) -> None:
    utterance = make_utterance(playout, 1.0)
    playout.accept(utterance)
    render(playout, utterance, range(utterance.frame_count))
    first = playout.audio_frame(0)
    assert first is not None
    assert playout.audio_frame(0) is None


def test_seconds_until_free_counts_down(playout: Playout, time_source: FakeTime) -> None:
    utterance = make_utterance(playout, 3.0)
    playout.accept(utterance)
    assert playout.seconds_until_free() == pytest.approx(3.0 + 0.12, abs=0.01)
    render(playout, utterance, range(utterance.frame_count))
    for n in range(50):
        playout.audio_frame(n)
    time_source.now += 1.0
    assert playout.seconds_until_free() == pytest.approx(2.0, abs=0.03)


def play_audio(playout: Playout, frames: range) -> list:
    return [playout.audio_frame(n) for n in frames]


def test_a_staged_utterance_plays_on_the_audio_frame_after_the_current_one(
    playout: Playout, events: list
) -> None:
    first = make_utterance(playout, 0.5)
    playout.accept(first)
    second = make_utterance(playout, 0.3)
    second.place(playout.counter_after_current())
    playout.stage(second)
    render(playout, first, range(first.frame_count))
    render(playout, second, range(second.frame_count))
    sent = play_audio(playout, range(60))
    audible = [s for s in sent if s is not None]
    assert len(audible) == 25 + 15
    assert sent[: len(audible)] == audible  # no silent frame between them
    np.testing.assert_array_equal(np.concatenate(audible), np.concatenate([first.samples, second.samples]))
    ended = next(e for e in events if e.kind is PlayoutEventKind.SPEAKING_ENDED)
    started = [e for e in events if e.kind is PlayoutEventKind.SPEAKING_STARTED][1]
    assert (ended.utterance_id, started.utterance_id) == (first.id, second.id)
    assert started.media_time == pytest.approx(ended.media_time)
    assert playout.stats.utterances_finished == 2


def test_a_staged_utterance_continues_the_avatar_counter_where_the_first_ends(playout: Playout) -> None:
    first = make_utterance(playout, 0.5)
    playout.accept(first)
    second = make_utterance(playout, 0.5)
    second.place(playout.counter_after_current())
    playout.stage(second)
    assert second.start_counter == first.start_counter + first.frame_count
    render(playout, first, range(first.frame_count))
    render(playout, second, range(second.frame_count))
    play_audio(playout, range(26))  # all of the first, and the second's first frame
    assert second.start_time == pytest.approx(first.end_time)
    last_of_first = playout.video_frame(first.end_time - 0.01)
    first_of_second = playout.video_frame(second.start_time + 0.001)
    assert last_of_first.avatar_index == playout.avatar_index(first.start_counter + first.frame_count - 1)
    assert first_of_second.speaking and first_of_second.image[0, 0, 0] == 0
    assert first_of_second.avatar_index == playout.avatar_index(second.start_counter)


def test_a_staged_utterance_frames_are_due_after_the_current_one(playout: Playout) -> None:
    first = make_utterance(playout, 1.0)
    playout.accept(first)
    second = make_utterance(playout, 1.0)
    second.place(playout.counter_after_current())
    playout.stage(second)
    render(playout, first, range(first.frame_count))
    assert playout.frame_due(second, 3) == pytest.approx(first.start_time + 1.0 + 0.3)


def test_the_frames_a_start_waits_for_are_wanted_at_once_the_rest_when_due(
    playout: Playout, time_source: FakeTime
) -> None:
    utterance = make_utterance(playout, 1.0)
    playout.accept(utterance)
    accepted = utterance.accepted_at
    time_source.now += 0.05
    # Prebuffer 0.2 s at 10 fps: frames 0 and 1 gate the start, which is not set yet.
    assert [playout.frame_wanted(utterance, j) for j in (0, 1)] == [accepted, accepted]
    assert playout.frame_due(utterance, 1) > accepted
    assert playout.frame_wanted(utterance, 2) == playout.frame_due(utterance, 2)
    render(playout, utterance, range(2))
    assert utterance.start_time is not None  # now every frame has its real due time
    assert playout.frame_wanted(utterance, 1) == playout.frame_due(utterance, 1) == pytest.approx(
        utterance.start_time + 0.1
    )
    staged = make_utterance(playout, 1.0)
    staged.place(playout.counter_after_current())
    playout.stage(staged)
    assert playout.frame_wanted(staged, 0) == playout.frame_due(staged, 0)


def test_a_staged_utterance_not_rendered_in_time_starts_once_it_is(playout: Playout, time_source: FakeTime) -> None:
    first = make_utterance(playout, 0.2)
    playout.accept(first)
    second = make_utterance(playout, 0.5)
    second.place(playout.counter_after_current())
    playout.stage(second)
    render(playout, first, range(first.frame_count))
    play_audio(playout, range(10))
    assert playout.utterance is second and second.start_time is None
    # While it renders, the idle loop waits at the frame it will start from.
    assert playout.video_frame(0.25).avatar_index == playout.avatar_index(second.start_counter)
    time_source.now += 0.3
    render(playout, second, range(second.frame_count))
    assert second.start_time == pytest.approx(0.3)
    assert play_audio(playout, range(10, 15)) == [None] * 5
    np.testing.assert_array_equal(playout.audio_frame(15), second.samples[:AUDIO_SAMPLES_PER_FRAME])


def test_cancel_shows_the_frame_on_screen_until_its_time_is_over_then_the_next(
    playout: Playout, time_source: FakeTime
) -> None:
    utterance = make_utterance(playout, 2.0)
    playout.accept(utterance)
    render(playout, utterance, range(utterance.frame_count))
    time_source.now += 0.45
    play_audio(playout, range(23))  # up to 0.46 s
    event = playout.cancel("interrupted")
    assert event is not None and event.reason == "interrupted"
    assert event.played_seconds == pytest.approx(0.46)
    # Frame 4 (0.4-0.5 s) was on screen: its avatar frame stays until 0.5 s, then 5, 6 ...
    start = utterance.start_counter
    assert playout.video_frame(0.47).avatar_index == playout.avatar_index(start + 4)
    assert playout.video_frame(0.51).avatar_index == playout.avatar_index(start + 5)
    assert playout.video_frame(0.61).avatar_index == playout.avatar_index(start + 6)
    assert playout.audio_frame(23) is None


def test_the_next_utterance_after_a_cut_starts_from_the_counter_the_cut_left(
    playout: Playout, time_source: FakeTime
) -> None:
    utterance = make_utterance(playout, 2.0)
    playout.accept(utterance)
    render(playout, utterance, range(utterance.frame_count))
    time_source.now += 0.45
    play_audio(playout, range(23))
    playout.cancel()
    following = make_utterance(playout, 1.0)
    # Accepted now, it is expected to start after the measured start delay (0.12 s).
    assert following.start_counter == utterance.start_counter + 5
    playout.accept(following)
    assert playout.video_frame(0.8).avatar_index == playout.avatar_index(following.start_counter)


def test_cancel_unstages_the_staged_utterance(playout: Playout) -> None:
    first = make_utterance(playout, 1.0)
    playout.accept(first)
    second = make_utterance(playout, 1.0)
    playout.stage(second)
    playout.cancel()
    assert playout.upcoming is None and playout.utterance is None
