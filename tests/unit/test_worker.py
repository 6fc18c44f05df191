"""The render worker: earliest deadline first, batches across sessions, off the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from server.lipsync.engine import Avatar, LipSyncEngine, LoadedAvatar, RenderRequest
from server.lipsync.worker import LipSyncWorker, WorkerClosedError


class RecordingEngine(LipSyncEngine):
    """Renders a frame filled with its features value and records each batch."""

    name = "recording"
    default_max_batch = 4

    def __init__(self) -> None:
        self.batches: list[list[object]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.threads: set[str] = set()

    def load_avatar(self, avatar: Avatar) -> LoadedAvatar:
        return LoadedAvatar(avatar, None)

    def audio_features(self, samples: np.ndarray, fps: float, frames: range) -> list[object]:
        return list(frames)

    def render(self, batch: Sequence[RenderRequest]) -> list[np.ndarray]:
        self.gate.wait()
        self.threads.add(threading.current_thread().name)
        self.batches.append([r.features for r in batch])
        if any(r.features == "boom" for r in batch):
            raise RuntimeError("model exploded")
        return [np.full((2, 2, 3), hash(r.features) % 200, np.uint8) for r in batch]


def avatar() -> LoadedAvatar:
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    return LoadedAvatar(Avatar("t", frames, np.zeros((2, 4), int)), None)


@pytest.fixture
def engine() -> RecordingEngine:
    return RecordingEngine()


@pytest.fixture
async def worker(engine: RecordingEngine):
    w = LipSyncWorker(engine)
    yield w
    w.close()
    w.join(2)


async def test_earliest_deadlines_first_across_sessions_in_batches(worker, engine) -> None:
    engine.gate.clear()  # hold the worker while both sessions queue their frames
    blocker = worker.render([RenderRequest(avatar(), 0, "first")], [0.0])
    await asyncio.sleep(0.05)
    now = time.monotonic()
    a = worker.render([RenderRequest(avatar(), 0, f"a{i}") for i in range(4)], [now + i for i in range(4)], "a")
    b = worker.render([RenderRequest(avatar(), 0, f"b{i}") for i in range(4)], [now + i + 0.5 for i in range(4)], "b")
    engine.gate.set()
    await asyncio.gather(*blocker, *a, *b)
    assert engine.batches == [["first"], ["a0", "b0", "a1", "b1"], ["a2", "b2", "a3", "b3"]]
    assert worker.stats.frames_rendered == 9
    assert worker.stats.batches == 3
    assert worker.stats.shared_batches == 2


async def test_frames_wanted_before_their_deadline_go_first_and_are_judged_by_the_deadline(
    worker, engine
) -> None:
    engine.gate.clear()
    blocker = worker.render([RenderRequest(avatar(), 0, "first")], [0.0])
    await asyncio.sleep(0.05)
    now = time.monotonic()
    # Session a plays: its next frames are due soon. Session b's speech has not started:
    # its first frames are due at an estimated start later than a's, but wanted now.
    a = worker.render([RenderRequest(avatar(), 0, f"a{i}") for i in range(4)], [now + 5 + i for i in range(4)], "a")
    b = worker.render(
        [RenderRequest(avatar(), 0, f"b{i}") for i in range(2)], [now + 10, now + 10], "b",
        wanted=[now - 1, now - 1],
    )
    engine.gate.set()
    await asyncio.gather(*blocker, *a, *b)
    assert engine.batches == [["first"], ["b0", "b1", "a0", "a1"], ["a2", "a3"]]
    assert worker.stats.frames_late == 1  # only "first", due at 0: b's were in time for theirs


async def test_renders_off_the_event_loop(worker, engine) -> None:
    await asyncio.gather(*worker.render([RenderRequest(avatar(), 0, 1)], [0.0]))
    assert engine.threads == {"lipsync-recording"}
    assert threading.current_thread().name not in engine.threads


async def test_calls_run_in_deadline_order_with_renders(worker, engine) -> None:
    features = await worker.call(engine.audio_features, None, 10.0, range(3, 6))
    assert features == [3, 4, 5]
    assert worker.stats.calls == 1


async def test_cancelled_jobs_are_not_rendered(worker, engine) -> None:
    engine.gate.clear()
    blocker = worker.render([RenderRequest(avatar(), 0, "first")], [0.0])
    await asyncio.sleep(0.05)
    doomed = worker.render([RenderRequest(avatar(), 0, "gone")], [1.0])
    doomed[0].cancel()
    kept = worker.render([RenderRequest(avatar(), 0, "kept")], [2.0])
    engine.gate.set()
    await asyncio.gather(blocker[0], kept[0])
    assert ["gone"] not in engine.batches and all("gone" not in b for b in engine.batches)
    assert worker.stats.jobs_dropped == 1


async def test_engine_errors_reach_the_waiting_jobs_and_the_worker_goes_on(worker) -> None:
    failed = worker.render([RenderRequest(avatar(), 0, "boom")], [0.0])
    with pytest.raises(RuntimeError, match="model exploded"):
        await failed[0]
    later = await asyncio.gather(*worker.render([RenderRequest(avatar(), 0, "fine")], [0.0]))
    assert later[0].shape == (2, 2, 3)


async def test_close_fails_queued_jobs(worker, engine) -> None:
    engine.gate.clear()
    blocker = worker.render([RenderRequest(avatar(), 0, "first")], [0.0])
    await asyncio.sleep(0.05)
    queued = worker.render([RenderRequest(avatar(), 0, "late")], [1.0])
    worker.close()
    engine.gate.set()
    with pytest.raises(WorkerClosedError):
        await queued[0]
    await blocker[0]
    with pytest.raises(WorkerClosedError):
        worker.render([RenderRequest(avatar(), 0, "after")], [0.0])


async def test_a_frame_is_not_started_before_its_not_before(worker, engine) -> None:
    now = time.monotonic()
    # Wanted first, but held for 0.3 s: the frame wanted later, free to start, goes first.
    held = worker.render([RenderRequest(avatar(), 0, "held")], [now + 1], "a", not_before=[now + 0.3])
    free = worker.render([RenderRequest(avatar(), 0, "free")], [now + 2], "b")
    await free[0]
    assert engine.batches == [["free"]] and not held[0].done()
    await held[0]
    assert time.monotonic() >= now + 0.3
    assert engine.batches == [["free"], ["held"]]


async def test_close_fails_the_jobs_held_for_later(worker, engine) -> None:
    held = worker.render([RenderRequest(avatar(), 0, "held")], [time.monotonic() + 60],
                         not_before=[time.monotonic() + 30])
    await asyncio.sleep(0.05)
    worker.close()
    with pytest.raises(WorkerClosedError):
        await held[0]
    assert engine.batches == []


async def test_features_and_the_first_frames_come_from_one_turn_of_the_worker(worker, engine) -> None:
    now = time.monotonic()
    first = [(avatar(), 0, now + 10), (avatar(), 1, now - 1)]
    features, images = await worker.queue_features_and_first_frames(None, 25.0, range(5, 9), first, now, "a")
    assert features == [5, 6, 7, 8]
    # Rendered from the first two features, as one batch, and counted as one.
    assert engine.batches == [[5, 6]]
    assert [int(i[0, 0, 0]) for i in images] == [hash(5) % 200, hash(6) % 200]
    assert worker.stats.calls == 1 and worker.stats.batches == 1 and worker.stats.frames_rendered == 2
    assert worker.stats.frames_late == 1  # the second was due a second ago
    # None to render: the features alone.
    features, images = await worker.queue_features_and_first_frames(None, 25.0, range(2), [], now, "a")
    assert (features, images) == ([0, 1], []) and len(engine.batches) == 1
