"""The shared idle loop: every session's idle loop finds its place in it, at a keyframe."""

from __future__ import annotations

import asyncio

import av
import pytest

from server.lipsync.demo.face import build_demo_avatar
from server.media.clock import SessionClock
from server.media.idle_share import AvatarPictures, SharedIdleLoop
from server.media.playout import Playout, SyncSettings

AVATAR = build_demo_avatar()


_BUILT: dict[tuple[float, float], SharedIdleLoop] = {}


async def built(fps: float, playback_fps: float) -> SharedIdleLoop:
    loop = _BUILT.get((fps, playback_fps))
    if loop is None:
        loop = _BUILT[fps, playback_fps] = SharedIdleLoop(AvatarPictures(AVATAR), fps, playback_fps)
        loop.start(None)
    while not loop.ready:
        await asyncio.sleep(0.02)
    return loop


class FixedClock(SessionClock):
    def __init__(self) -> None:
        super().__init__(lambda: 0.0)


@pytest.mark.parametrize(("fps", "playback_fps"), [(10, 15), (25, 25), (12, 25)])
@pytest.mark.parametrize(("anchor_time", "anchor_counter"), [(0.0, 0), (1.234, 17), (7.77, 61)])
async def test_an_idle_loop_anchored_anywhere_matches_the_shared_loop_from_a_keyframe_on(
    fps: float, playback_fps: float, anchor_time: float, anchor_counter: int
) -> None:
    loop = await built(fps, playback_fps)
    playout = Playout(AVATAR.cycle, fps, SyncSettings(), FixedClock())
    playout._idle_anchor = (anchor_time, anchor_counter)  # where an utterance ended
    start = int(anchor_time * playback_fps) + 3
    frames = range(start, start + loop.rate_period + 1)
    counters = [playout.idle_counter((k + 0.5) / playback_fps) for k in frames]
    plan = loop.plan(counters, start)
    assert plan is not None
    variant, offset, join = plan
    assert join - start < loop.keyframe_interval
    assert loop.is_keyframe(variant, join + offset)
    for k in range(join, join + 3 * loop.period):
        shown = playout.video_frame((k + 0.5) / playback_fps).avatar_index
        assert loop.picture(variant, k + offset) == shown


async def test_every_keyframe_of_the_loop_starts_a_stream_that_decodes_round_and_round() -> None:
    loop = await built(10, 15)
    for variant in range(loop.variants):
        for start in range(0, loop.period, loop.keyframe_interval):
            assert loop.is_keyframe(variant, start)
            decoder = av.CodecContext.create("libvpx", "r")
            for q in range(start, start + loop.period + 2):
                assert len(decoder.decode(av.Packet(loop.packet(variant, q)))) == 1
