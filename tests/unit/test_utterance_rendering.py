"""An utterance's first trip to the render worker is queued as it is spoken, not a turn later.

`render_utterance` queues the first chunk's features and first frames before the task
that renders the rest has run once: a start of speech does not wait for a turn of a busy
event loop first. Its failures still come from the task, and a cut before the task ran
leaves nothing rendered for it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from server.lipsync.demo.engine import DemoEngine
from server.lipsync.demo.face import build_demo_avatar
from server.lipsync.worker import LipSyncWorker
from server.media.clock import SessionClock
from server.media.playout import Playout, SyncSettings
from server.media.utterance import Utterance
from server.sessions.queue import SpeechMode, SpeechQueue
from server.sessions.speech import render_utterance
from tests.audio_files import speech_like

FPS = 25
WAIT_SECONDS = 10.0


class GatedEngine(DemoEngine):
    """The demo engine; `features` is set when it computes features, and it holds
    there until `gate` is set."""

    def __init__(self) -> None:
        self.features = threading.Event()
        self.gate = threading.Event()
        self.feature_calls = 0

    def audio_features(self, samples: np.ndarray, fps: float, frames: range) -> list[float]:
        self.feature_calls += 1
        self.features.set()
        self.gate.wait(WAIT_SECONDS)
        return super().audio_features(samples, fps, frames)


class Harness:
    """A session's playout, speech queue and rendering, over a real render worker."""

    def __init__(self, worker: LipSyncWorker) -> None:
        self.worker = worker
        self.avatar = worker.engine.load_avatar(build_demo_avatar())
        self.playout = Playout(self.avatar.avatar.cycle, FPS, SyncSettings(), SessionClock())
        self.failures: list[tuple[str, str]] = []
        self.in_speak = False
        self.queue = SpeechQueue(self.playout, self._render, 3, lambda *_: None)

    def _render(self, utterance: Utterance) -> asyncio.Task[None]:
        return render_utterance(
            utterance, self.avatar, self.worker, self.playout, 2, "session", self._failed
        )

    def _failed(self, utterance: Utterance, message: str) -> None:
        assert not self.in_speak, "a failure reported from inside the queue's step"
        self.failures.append((utterance.id, message))
        self.queue.render_failed(utterance)

    def speak(self, seconds: float) -> Utterance:
        self.in_speak = True
        try:
            utterance = Utterance(speech_like(seconds), FPS, 0, chunk_duration=1.0)
            return self.queue.speak(utterance, SpeechMode.INTERRUPT).utterance
        finally:
            self.in_speak = False


@pytest.fixture
def gated() -> Iterator[tuple[GatedEngine, Harness]]:
    """A harness over a render worker whose engine is held in its features (`GatedEngine`)."""
    engine = GatedEngine()
    worker = LipSyncWorker(engine)
    try:
        yield engine, Harness(worker)
    finally:
        engine.gate.set()
        worker.close()
        worker.join(2)


async def test_the_features_are_queued_before_the_render_task_first_runs(
    gated: tuple[GatedEngine, Harness],
) -> None:
    engine, harness = gated
    utterance = harness.speak(2.0)
    # The loop is not given a turn: the worker thread has the job already.
    assert engine.features.wait(WAIT_SECONDS)
    engine.gate.set()
    for _ in range(200):
        if utterance.ready >= utterance.chunks[0].frames.stop:
            break
        await asyncio.sleep(0.01)
    assert utterance.ready >= utterance.chunks[0].frames.stop, utterance.ready
    assert harness.failures == []


async def test_an_utterance_cut_before_its_task_ran_is_not_rendered(
    gated: tuple[GatedEngine, Harness],
) -> None:
    engine, harness = gated
    first = harness.speak(2.0)
    assert engine.features.wait(WAIT_SECONDS)  # the worker is held in its features
    second = harness.speak(2.0)  # cuts the first, and is cut in the same turn
    harness.queue.interrupt()
    engine.gate.set()
    await asyncio.sleep(0.5)
    assert engine.feature_calls == 1  # only the first's, started before the cut
    assert harness.worker.stats.jobs_dropped >= 1
    assert second.ready == 0 and first.ready == 0
    assert harness.failures == []


async def test_a_closed_worker_fails_the_utterance_from_its_task() -> None:
    worker = LipSyncWorker(DemoEngine())
    harness = Harness(worker)
    worker.close()
    worker.join(2)
    utterance = harness.speak(1.0)
    assert harness.failures == []  # not from inside speak
    for _ in range(20):
        await asyncio.sleep(0)
    assert harness.failures == [(utterance.id, "rendering failed: the render worker was closed")]
    assert harness.playout.utterance is None
