"""The busy policy and the queue over a real playout: reject, queue, interrupt."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from server.media.clock import SessionClock
from server.media.playout import Playout, PlayoutEvent, PlayoutEventKind, SyncSettings
from server.media.utterance import Utterance, UtteranceState
from server.sessions.queue import BusyError, QueueFullError, SpeechMode, SpeechQueue

FPS = 10
CYCLE = tuple(range(8)) + tuple(range(6, 0, -1))


class Harness:
    """A playout and its queue, rendering every frame at once, as a session wires them."""

    def __init__(self, max_queued: int = 3) -> None:
        self.playout = Playout(
            CYCLE, FPS, SyncSettings(0.2, 0.08, 0.12), SessionClock(lambda: 100.0), self._on_event
        )
        self.queue = SpeechQueue(self.playout, self._render, max_queued, self._on_dropped)
        self.rendered: list[tuple[str, int]] = []  # (utterance id, start counter) per render
        self.dropped: list[tuple[str, str]] = []
        self.events: list[PlayoutEvent] = []
        self.fail: set[str] = set()

    async def _render(self, utterance: Utterance) -> None:
        self.rendered.append((utterance.id, utterance.start_counter))
        if utterance.id in self.fail:
            self.queue.render_failed(utterance)
            return
        for j in range(utterance.frame_count):
            utterance.add_frame(j, np.zeros((2, 2, 3), np.uint8))
            self.playout.frames_added(utterance)

    def _on_event(self, event: PlayoutEvent) -> None:
        self.events.append(event)
        if event.kind is not PlayoutEventKind.SPEAKING_STARTED:
            self.queue.ended()

    def _on_dropped(self, utterance: Utterance, reason: str) -> None:
        self.dropped.append((utterance.id, reason))

    def speak(self, seconds: float, mode: SpeechMode = SpeechMode.QUEUE, keep_queue: bool = False):
        samples = np.full(int(seconds * 48_000), 0.5, np.float32)
        return self.queue.speak(Utterance(samples, FPS, 0, chunk_duration=1.0), mode, keep_queue)

    def play(self, frames: int) -> None:
        n0 = getattr(self, "_n", 0)
        for n in range(n0, n0 + frames):
            self.playout.audio_frame(n)
        self._n = n0 + frames


@pytest.fixture
async def harness() -> Harness:
    return Harness()


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_reject_refuses_while_anything_plays_saying_when_it_will_be_free(harness: Harness) -> None:
    harness.speak(1.0, SpeechMode.REJECT)
    harness.speak(2.0, SpeechMode.QUEUE)
    with pytest.raises(BusyError) as refused:
        harness.speak(1.0, SpeechMode.REJECT)
    assert refused.value.status == 409
    assert "mode=queue" in refused.value.message
    assert refused.value.extra["retry_after_seconds"] >= 3.0


async def test_queued_utterances_get_their_positions_in_order(harness: Harness) -> None:
    admissions = [harness.speak(0.5) for _ in range(4)]
    assert [a.position for a in admissions] == [0, 1, 2, 3]
    assert harness.playout.utterance is admissions[0].utterance
    assert harness.queue.queued() == [a.utterance for a in admissions[1:]]


async def test_the_queue_refuses_beyond_its_bound_with_a_sentence(harness: Harness) -> None:
    for _ in range(4):  # one plays, three wait
        harness.speak(0.5)
    with pytest.raises(QueueFullError) as refused:
        harness.speak(0.5)
    assert refused.value.status == 409
    assert "MAX_QUEUED_UTTERANCES" in refused.value.message


async def test_only_the_next_in_line_is_rendered_from_where_the_current_one_ends(harness: Harness) -> None:
    first = harness.speak(0.5).utterance
    second = harness.speak(0.3).utterance
    third = harness.speak(0.3).utterance
    await settle()
    assert harness.rendered == [(first.id, first.start_counter), (second.id, first.start_counter + 5)]
    harness.play(26)  # the first ends and the second starts on the next frame
    await settle()
    assert harness.playout.utterance is second and second.state is UtteranceState.PLAYING
    assert harness.rendered[-1] == (third.id, second.start_counter + 3)


async def test_interrupt_cuts_drops_the_queue_and_the_new_speech_plays_next(harness: Harness) -> None:
    first = harness.speak(2.0).utterance
    queued = [harness.speak(0.5).utterance for _ in range(2)]
    await settle()
    harness.play(10)
    admission = harness.speak(1.0, SpeechMode.INTERRUPT)
    assert admission.position == 0
    assert admission.cut is not None and admission.cut.utterance_id == first.id
    assert admission.cut.played_seconds == pytest.approx(0.2, abs=0.021)
    assert admission.dropped == [u.id for u in queued]
    assert harness.dropped == [(u.id, "interrupted") for u in queued]
    assert harness.playout.utterance is admission.utterance
    assert harness.queue.queued() == []
    cancelled = [e for e in harness.events if e.kind is PlayoutEventKind.UTTERANCE_CANCELLED]
    assert [(e.utterance_id, e.reason) for e in cancelled] == [(first.id, "interrupted")]


async def test_interrupt_keeping_the_queue_renders_the_next_again_from_the_cut(harness: Harness) -> None:
    first = harness.speak(2.0).utterance
    second = harness.speak(0.5).utterance
    await settle()
    assert second.start_counter == first.start_counter + 20
    harness.play(10)
    result = harness.queue.interrupt(keep_queue=True)
    await settle()
    assert result.cut is not None and result.dropped == [] and result.queued == 0
    assert harness.playout.utterance is second
    assert second.start_counter < first.start_counter + 20  # placed again, where the cut left
    assert harness.rendered[-1] == (second.id, second.start_counter)


async def test_interrupt_with_new_speech_keeping_the_queue_plays_it_before_the_queue(harness: Harness) -> None:
    harness.speak(2.0)
    second = harness.speak(0.5).utterance
    await settle()
    harness.play(10)
    admission = harness.speak(1.0, SpeechMode.INTERRUPT, keep_queue=True)
    await settle()
    assert harness.playout.utterance is admission.utterance
    assert harness.playout.upcoming is second
    assert second.start_counter == admission.utterance.start_counter + 10


async def test_interrupt_on_an_idle_session_cuts_nothing(harness: Harness) -> None:
    result = harness.queue.interrupt()
    assert result.cut is None and result.dropped == [] and result.queued == 0


async def test_a_failed_render_drops_that_utterance_and_the_next_moves_up(harness: Harness) -> None:
    first = harness.speak(1.0).utterance
    harness.fail.add(f"u{int(first.id[1:]) + 1}")
    second = harness.speak(0.5).utterance
    third = harness.speak(0.5).utterance
    await settle()
    assert harness.dropped == [(second.id, "rendering failed")]
    assert harness.playout.upcoming is third
    assert third.start_counter == first.start_counter + 10
