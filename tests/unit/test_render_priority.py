"""A render shares the render worker with live sessions and never goes before their frames."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from server.lipsync.demo.engine import DemoEngine
from server.lipsync.demo.face import build_demo_avatar
from server.lipsync.engine import LoadedAvatar, RenderRequest
from server.lipsync.worker import LipSyncWorker
from server.renders.clip import render_clip
from tests.audio_files import speech_like

LIVE_FRAMES = 16
LIVE_DUE_SECONDS = 0.5  # a live frame is due within its chunk and prebuffer: seconds at most


class GatedDemoEngine(DemoEngine):
    """The demo engine, recording whose frames each batch held, and held at `gate`."""

    def __init__(self, live: LoadedAvatar | None = None) -> None:
        self.live = live
        self.gate = threading.Event()
        self.waiting = threading.Event()
        self.batches: list[list[str]] = []

    def render(self, batch: Sequence[RenderRequest]) -> list[np.ndarray]:
        self.batches.append(["live" if r.avatar is self.live else "render" for r in batch])
        self.waiting.set()
        self.gate.wait()
        return super().render(batch)


async def test_live_frames_queued_during_a_render_are_all_rendered_before_its_next_ones(
    tmp_path: Path,
) -> None:
    engine = GatedDemoEngine()
    offline = engine.load_avatar(build_demo_avatar())
    engine.live = engine.load_avatar(build_demo_avatar())
    worker = LipSyncWorker(engine)
    try:
        samples = speech_like(4.0)
        clip = asyncio.create_task(
            render_clip(samples, offline, worker, 25, tmp_path / "clip.mp4", "render", lambda _: None)
        )
        # The worker is held in the render's first batch, its other frames queued behind it.
        assert await asyncio.to_thread(engine.waiting.wait, 10)
        due = time.monotonic() + LIVE_DUE_SECONDS
        live = worker.render(
            [RenderRequest(engine.live, i % 3, 0.8) for i in range(LIVE_FRAMES)],
            [due] * LIVE_FRAMES,
            owner="session",
        )
        engine.gate.set()
        await asyncio.gather(*live)
        await asyncio.wait_for(clip, 30)
    finally:
        worker.close()
        worker.join(2)
    order = [owner for batch in engine.batches for owner in batch]
    assert order[0] == "render"
    last_live = max(i for i, owner in enumerate(order) if owner == "live")
    first_batch = len(engine.batches[0])
    # Every live frame before any render frame but those of the batch already running.
    assert order[first_batch : last_live + 1] == ["live"] * LIVE_FRAMES, order
    assert order.count("render") == 100 and (tmp_path / "clip.mp4").stat().st_size > 0
