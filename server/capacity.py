"""Capacity: what one session costs, what this host can serve in real time, and how it is found.

Two resources are budgeted, both in frames per second:

- the render worker (one thread per engine): `render_fps` frames/s, 1 / (seconds per frame
  at the worker's batch size) times the headroom;
- the media CPU (every core this process may run on): `encode_fps` video frames/s of the
  reference size converted and VP8-encoded, cores / (seconds per frame) times the headroom.
  Other CPU work is counted in the same unit: a session's Opus stream (its share of a core
  over the seconds of one encoded frame) and, when the engine renders on the CPU, its
  render time.

A session costs its encode load always (`playback_fps` frames/s scaled by its avatar's
pixels; an idle session `idle_encode_share` of it, since an idle loop shared between
viewers is far cheaper than speech) and, while it speaks, `fps` frames/s of the render
worker. The costs are measured on this host at start-up (`calibrate`, under a second, off
the event loop) or configured (`CAPACITY_*` settings).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from server.lipsync.engine import LipSyncEngine, LoadedAvatar, RenderRequest
from server.lipsync.worker import LipSyncWorker
from server.settings import Settings

logger = logging.getLogger(__name__)

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
REFERENCE_SIZE = (512, 512)
"""(width, height) the configured encode cost is given for: the demo avatar's."""
AUDIO_FRAME_SAMPLES = 960  # 20 ms at 48 kHz, what the audio track sends
AUDIO_RATE = 48_000
AUDIO_FRAMES_PER_SECOND = AUDIO_RATE // AUDIO_FRAME_SAMPLES
VIDEO_TIME_BASE = Fraction(1, 90_000)
VP8_PAYLOAD_TYPE = 96
CALIBRATION_SSRC = 0x5EED
SRTP_KEY_BYTES = 30  # AES-128 key + 112-bit salt (SRTP_AES128_CM_SHA1_80)

CALIBRATION_SECONDS = 0.3
"""Wall time spent measuring renders, and at most encodes (after a warm-up of each)."""
MIN_TIMED_BATCHES = 2
MIN_TIMED_FRAMES = 5
CALIBRATION_ENCODE_FRAMES = 30
"""Most frames converted and VP8-encoded (after a first, a keyframe, not timed)."""
CALIBRATION_AUDIO_FRAMES = 50
"""One second of 20 ms Opus frames."""
MIN_COST_SECONDS = 1e-5
"""A floor on a measured cost, so that no budget is infinite."""


@dataclass(frozen=True)
class FrameCosts:
    """What one frame costs on this host."""

    render_seconds: float
    """Engine time per frame at the worker's batch size."""
    encode_seconds: float
    """Converting one RGB frame of `reference_size` and VP8-encoding it (with packetizing)."""
    audio_core_share: float
    """Share of one core a session's Opus stream takes (50 frames/s)."""
    reference_size: tuple[int, int] = REFERENCE_SIZE
    render_uses_cpu: bool = True
    """Whether the engine renders on the CPU cores the encoders use (not on a GPU)."""
    source: str = "configured"
    """`calibrated` (measured at start-up) or `configured` (CAPACITY_* settings)."""


@dataclass(frozen=True)
class Budget:
    """Frames per second this host serves in real time, headroom taken off."""

    render_fps: float
    encode_fps: float
    cores: float
    headroom: float


@dataclass(frozen=True)
class Load:
    """Frames per second asked of the render worker and of the media CPU."""

    render_fps: float = 0.0
    encode_fps: float = 0.0

    def __add__(self, other: Load) -> Load:
        return Load(self.render_fps + other.render_fps, self.encode_fps + other.encode_fps)

    def __sub__(self, other: Load) -> Load:
        return Load(self.render_fps - other.render_fps, self.encode_fps - other.encode_fps)


@dataclass(frozen=True)
class StreamShape:
    """What a session's load depends on."""

    fps: int
    playback_fps: int
    width: int = REFERENCE_SIZE[0]
    height: int = REFERENCE_SIZE[1]


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> float:
    """Cores this process may use: those it may run on (its affinity, which `taskset` and
    `docker --cpuset-cpus` narrow), or fewer under a CPU quota (`docker --cpus`: cgroup
    v2's cpu.max, "quota period")."""
    try:
        cores = float(len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        cores = float(os.cpu_count() or 1)
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    return cores


class CapacityModel:
    """Costs and budget: the load of a session, and whether a load fits."""

    def __init__(
        self,
        costs: FrameCosts,
        cores: float,
        headroom: float,
        idle_encode_share: float,
        render_fps: float = 0.0,
        encode_fps: float = 0.0,
    ) -> None:
        """`render_fps` / `encode_fps` > 0 are configured budgets that replace the ones
        following from `costs`."""
        self.costs = costs
        self.idle_encode_share = idle_encode_share
        self.budget = Budget(
            render_fps=render_fps or headroom / max(costs.render_seconds, MIN_COST_SECONDS),
            encode_fps=encode_fps or headroom * cores / max(costs.encode_seconds, MIN_COST_SECONDS),
            cores=cores,
            headroom=headroom,
        )

    def session_load(self, shape: StreamShape, speaking: bool) -> Load:
        costs = self.costs
        encode = max(costs.encode_seconds, MIN_COST_SECONDS)
        ref_w, ref_h = costs.reference_size
        pixels = (shape.width * shape.height) / (ref_w * ref_h)
        video = shape.playback_fps * pixels * (1.0 if speaking else self.idle_encode_share)
        audio = costs.audio_core_share / encode
        if not speaking:
            return Load(0.0, video + audio)
        render_cpu = shape.fps * costs.render_seconds / encode if costs.render_uses_cpu else 0.0
        return Load(float(shape.fps), video + audio + render_cpu)

    def fits(self, load: Load) -> bool:
        budget = self.budget
        return load.render_fps <= budget.render_fps + 1e-9 and load.encode_fps <= budget.encode_fps + 1e-9

    def speaking_sessions(self, shape: StreamShape) -> int:
        """How many sessions of `shape` can all speak at once (at least 1)."""
        load = self.session_load(shape, speaking=True)
        counts = [self.budget.encode_fps / load.encode_fps if load.encode_fps else math.inf]
        if load.render_fps:
            counts.append(self.budget.render_fps / load.render_fps)
        return max(1, int(min(counts) + 1e-9))

    def describe(self) -> dict[str, Any]:
        costs = self.costs
        return {
            "source": costs.source,
            "cores": self.budget.cores,
            "headroom": self.budget.headroom,
            "render_ms_per_frame": round(costs.render_seconds * 1000, 3),
            "encode_ms_per_frame": round(costs.encode_seconds * 1000, 3),
            "reference_size": list(costs.reference_size),
            "audio_core_share": round(costs.audio_core_share, 4),
            "idle_encode_share": self.idle_encode_share,
            "render_uses_cpu": costs.render_uses_cpu,
            "render_budget_fps": round(self.budget.render_fps, 1),
            "encode_budget_fps": round(self.budget.encode_fps, 1),
        }


# --- calibration ------------------------------------------------------------------------


def engine_renders_on_cpu(engine: LipSyncEngine) -> bool:
    device = str(engine.describe().get("device", "cpu"))
    return not device.startswith(("cuda", "mps"))


def measure_render(
    engine: LipSyncEngine, avatar: LoadedAvatar, batch_size: int, on_cpu: bool = True
) -> float:
    """Seconds per frame of `engine.render` at `batch_size`, on silent-to-loud features:
    CPU time when it renders on the CPU (what it takes from the cores, whatever else runs
    on them), else wall time (the device's).

    Call it on the render worker's thread (`LipSyncWorker.call`): engines run only there.
    """
    frames = len(avatar.avatar.frames)
    samples = np.sin(np.linspace(0, 400 * np.pi, AUDIO_RATE, dtype=np.float32)) * 0.5
    features = engine.audio_features(samples, 25.0, range(batch_size))
    batch = [RenderRequest(avatar, i % frames, features[i]) for i in range(batch_size)]
    engine.render(batch)  # warm-up: caches, allocator, kernels
    clock = time.process_time if on_cpu else time.perf_counter
    timed = 0
    started, wall = clock(), time.perf_counter()
    while timed < MIN_TIMED_BATCHES or time.perf_counter() - wall < CALIBRATION_SECONDS:
        engine.render(batch)
        timed += 1
    return (clock() - started) / (timed * batch_size)


def measure_encode(images: Sequence[np.ndarray], playback_fps: int = 15) -> float:
    """CPU seconds to send one RGB frame as the video track and aiortc's sender do: convert
    it, VP8-encode it, and make SRTP packets of it (the first frame, a keyframe, not
    counted; the socket's and the loop's own work is not in it)."""
    from aiortc.codecs.vpx import Vp8Encoder
    from aiortc.rtp import RtpPacket
    from av import VideoFrame
    from pylibsrtp import Policy, Session

    encoder = Vp8Encoder()
    srtp = Session(policy=Policy(key=os.urandom(SRTP_KEY_BYTES), ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    sequence = 0

    def encode(k: int) -> None:
        nonlocal sequence
        frame = VideoFrame.from_ndarray(images[k % len(images)], format="rgb24")
        frame.pts = round(k * 90_000 / playback_fps)
        frame.time_base = VIDEO_TIME_BASE
        payloads, timestamp = encoder.encode(frame)
        for payload in payloads:
            sequence += 1
            packet = RtpPacket(VP8_PAYLOAD_TYPE, sequence_number=sequence & 0xFFFF,
                               timestamp=timestamp, ssrc=CALIBRATION_SSRC, payload=payload)
            srtp.protect(packet.serialize())

    encode(0)
    timed = 0
    started, wall = time.process_time(), time.perf_counter()
    while timed < MIN_TIMED_FRAMES or (
        timed < CALIBRATION_ENCODE_FRAMES and time.perf_counter() - wall < CALIBRATION_SECONDS
    ):
        timed += 1
        encode(timed)
    return (time.process_time() - started) / timed


def measure_audio() -> float:
    """Share of one core (CPU time) a session's Opus stream takes."""
    from server.media.audio_encoder import OpusFrameEncoder

    encoder = OpusFrameEncoder()
    t = np.arange(AUDIO_FRAME_SAMPLES * CALIBRATION_AUDIO_FRAMES) / AUDIO_RATE
    pcm = (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16)
    started = time.process_time()
    for k in range(CALIBRATION_AUDIO_FRAMES):
        encoder.encode(pcm[k * AUDIO_FRAME_SAMPLES:(k + 1) * AUDIO_FRAME_SAMPLES].reshape(1, -1))
    seconds_per_frame = (time.process_time() - started) / CALIBRATION_AUDIO_FRAMES
    return seconds_per_frame * AUDIO_FRAMES_PER_SECOND


def calibration_images(avatar: LoadedAvatar) -> list[np.ndarray]:
    """The avatar's idle cycle frames: what the encoders mostly see."""
    return [avatar.avatar.frames[i] for i in avatar.avatar.cycle[:CALIBRATION_ENCODE_FRAMES]]


# --- from settings ----------------------------------------------------------------------

DEFAULT_SHAPE = StreamShape(fps=10, playback_fps=15)
"""A session at the API's default parameters (fps 10, playback 15) with the demo avatar's
size: the default session limit is how many of them can all speak at once."""


def configured_costs(settings: Settings, engine: LipSyncEngine) -> FrameCosts:
    return FrameCosts(
        render_seconds=settings.capacity_render_ms_per_frame / 1000,
        encode_seconds=settings.capacity_encode_ms_per_frame / 1000,
        audio_core_share=settings.capacity_audio_core_share,
        render_uses_cpu=engine_renders_on_cpu(engine),
    )


def capacity_model(settings: Settings, costs: FrameCosts) -> CapacityModel:
    return CapacityModel(
        costs,
        cores=settings.capacity_cores or available_cores(),
        headroom=settings.capacity_headroom,
        idle_encode_share=settings.capacity_idle_encode_share,
        render_fps=settings.capacity_render_fps,
        encode_fps=settings.capacity_encode_fps,
    )


async def calibrate(
    worker: LipSyncWorker, avatar: LoadedAvatar, loop_seconds_per_frame: float = 0.0
) -> FrameCosts:
    """This host's costs, measured with `avatar` (render on the worker's thread at its
    batch size, encoding in another thread), in CPU time where the work is the CPU's, so
    that other load on a shared machine does not count as cost: about a second. The event
    loop's work per frame sent, which a measurement off the loop cannot see, is
    `loop_seconds_per_frame` (CAPACITY_LOOP_MS_PER_FRAME), added to the encode cost."""
    engine = worker.engine
    started = time.perf_counter()
    on_cpu = engine_renders_on_cpu(engine)
    render = await worker.call(measure_render, engine, avatar, worker.max_batch, on_cpu)
    encode = await asyncio.to_thread(measure_encode, calibration_images(avatar))
    audio = await asyncio.to_thread(measure_audio)
    costs = FrameCosts(
        render_seconds=max(render, MIN_COST_SECONDS),
        encode_seconds=max(encode, MIN_COST_SECONDS) + loop_seconds_per_frame,
        audio_core_share=audio,
        reference_size=avatar.avatar.size,
        render_uses_cpu=on_cpu,
        source="calibrated",
    )
    logger.info(
        "capacity calibrated in %.2f s on avatar %s (%dx%d): render %.2f ms/frame at batch %d, "
        "convert + VP8 %.2f ms/frame (+ %.2f on the event loop), Opus %.1f%% of a core per session",
        time.perf_counter() - started, avatar.avatar.avatar_id, *avatar.avatar.size,
        render * 1000, worker.max_batch, encode * 1000, loop_seconds_per_frame * 1000, audio * 100,
    )
    return costs
