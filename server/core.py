"""The running server's parts, built from settings and shut down together."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import sys

from server.avatars.jobs import PreparationJobs
from server.capacity import calibrate, capacity_model, configured_costs
from server.chat.llm import ChatCompletions
from server.avatars.preparation import Preparation, Preparer
from server.avatars.storage import load_prepared, remove_leftovers
from server.avatars.store import AvatarStore
from server.isolation.pool import DecodeLimits, DecodePool
from server.lipsync.demo.face import build_demo_avatar
from server.lipsync.selection import EngineChoice, select_engine
from server.lipsync.worker import LipSyncWorker
from server.metrics import ServerMetrics
from server.renders.jobs import RenderJobs
from server.media.audio_input import DecodedAudio, decode_audio
from server.sessions.admission import AdmissionControl
from server.sessions.registry import SessionRegistry
from server.settings import Settings
from server.tts.selection import build_tts

logger = logging.getLogger(__name__)
_frozen_by = 0  # servers running in this process that froze the heap (tests run several)


# glibc's mallopt parameters (malloc.h), and the largest allocation it may serve from the
# heap instead of a mapping of its own (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 32 << 20


def keep_freed_memory(mib: int) -> bool:
    """Let glibc keep up to `mib` MiB of freed memory for reuse and serve allocations up to
    32 MiB from it (KEEP_FREED_MEMORY_MIB): False where there is no glibc, or `mib` is 0.
    The process's setting from then on (glibc cannot go back to its adaptive threshold)."""
    if mib <= 0:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): its own allocator's ways
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, mib << 20)
    )


def _freeze_heap() -> None:
    """Leave what is alive now out of the collector's full passes (the first server in the
    process does: later ones would freeze the garbage of those before them for good)."""
    global _frozen_by
    if _frozen_by == 0:
        gc.collect()  # what is garbage now is not kept forever
        gc.freeze()
    _frozen_by += 1


def _thaw_heap() -> None:
    """The collector scans everything again once the last server in the process closed."""
    global _frozen_by
    _frozen_by -= 1
    if _frozen_by == 0:
        gc.unfreeze()

VIDEO_DECODE_WORKERS = 2
"""One for the preparation running (they run one at a time), one for checking new uploads."""
VIDEO_DECODE_MAX_IN_FLIGHT = 4


class AvatarServer:
    """Engine, render worker, avatars and sessions: what the HTTP layer talks to."""

    def __init__(self, settings: Settings, choice: EngineChoice | None = None) -> None:
        self.settings = settings
        self.choice = choice or select_engine(settings)
        self.engine = self.choice.engine
        logger.info("lip-sync engine: %s (%s)", self.engine.name, self.choice.reason)
        self.worker = LipSyncWorker(
            self.engine, settings.lipsync_max_batch,
            None if settings.lipsync_render_ahead_seconds < 0 else settings.lipsync_render_ahead_seconds,
        )
        self._switch_interval: float | None = None  # the process's, while this one runs
        self._gc_frozen = False
        self.metrics = ServerMetrics()
        self.audio_decoders = DecodePool(
            "audio-decode",
            settings.decode_workers,
            DecodeLimits(
                settings.decode_max_memory_bytes,
                settings.decode_cpu_seconds,
                settings.decode_timeout_seconds,
            ),
            settings.decode_max_in_flight,
            on_replaced=self.metrics.decode_worker_crashed,
        )
        self.video_decoders = DecodePool(
            "video-decode",
            VIDEO_DECODE_WORKERS,
            DecodeLimits(
                settings.avatar_decode_max_memory_bytes,
                settings.avatar_decode_cpu_seconds,
                settings.decode_timeout_seconds,
            ),
            VIDEO_DECODE_MAX_IN_FLIGHT,
            on_replaced=self.metrics.decode_worker_crashed,
        )
        self.preparer = Preparer.from_settings(settings, self.video_decoders)
        self.avatars = AvatarStore(self.worker, self.preparer)
        self.preparations = PreparationJobs(self.preparer, self._precompute)
        self.admission = AdmissionControl(
            capacity_model(settings, configured_costs(settings, self.engine)),
            lambda: self.sessions.sessions(),
            settings.capacity_retry_after_seconds,
            settings.capacity_max_wait_seconds,
            settings.capacity_speaking_share,
        )
        """The capacity budget (configured until `start` has calibrated it) and its load."""
        self.sessions = SessionRegistry(
            settings, self.worker, self.avatars, self.admission, self.metrics
        )
        self.metrics.watch(self.sessions, self.worker, self.admission)
        self.accepting = False
        """Whether new sessions are taken: from `start()` until `close()` begins."""
        self.tts = build_tts(settings)
        logger.info(
            "text to speech: %s (%s)", self.tts.name,
            self.tts.unavailable_reason() or f"default voice {self.tts.default_voice()!r}",
        )
        self.renders = RenderJobs(
            settings.renders_dir, self.worker, self.avatars, settings.renders_max_jobs,
            settings.renders_max_running, settings.renders_ttl_seconds, settings.max_audio_seconds,
            node_id=settings.node_id, admission=self.admission,
        )
        self.llm = ChatCompletions(
            settings.llm_url, settings.llm_key, settings.llm_model, settings.llm_timeout_seconds
        )

    async def start(self) -> None:
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(self.settings.thread_switch_interval_seconds)
        if keep_freed_memory(self.settings.keep_freed_memory_mib):
            logger.debug("freed memory kept for reuse: up to %d MiB", self.settings.keep_freed_memory_mib)
        folder = self.settings.avatars_dir
        for name in remove_leftovers(folder):
            logger.info("removed %s, left in %s by an interrupted preparation", name, folder)
        await asyncio.gather(
            asyncio.to_thread(self.audio_decoders.start),
            asyncio.to_thread(self.video_decoders.start),
        )
        if self.settings.capacity_calibrate:
            await self._calibrate()
        logger.info(
            "capacity: render %.0f frames/s, encode %.0f frames/s (%s), %d sessions at most",
            self.admission.model.budget.render_fps, self.admission.model.budget.encode_fps,
            self.admission.model.costs.source, self.sessions.max_sessions,
        )
        self.sessions.start()
        self.renders.start()
        # What is loaded by now (the libraries, the engine, the capacity model) lives as long
        # as the server: left out of the collector's full passes, which otherwise scanned it
        # all while every session's media waited (225 ms with 12 sessions speaking, a gap
        # in every session's video at once).
        _freeze_heap()
        self._gc_frozen = True
        self.accepting = True

    async def _calibrate(self) -> None:
        """Measure this host's costs with the built-in avatar as drawn (its size is the one
        sessions use unless told otherwise; drawing it needs no preparation, so the first
        start is not delayed by one); on failure the configured costs stay."""
        try:
            drawn = await asyncio.to_thread(build_demo_avatar)
            avatar = await self.worker.call(self.engine.load_avatar, drawn)
            costs = await calibrate(
                self.worker, avatar, self.settings.capacity_loop_ms_per_frame / 1000
            )
        except Exception:
            logger.exception("capacity calibration failed; the configured costs are used")
            return
        self.admission.model = capacity_model(self.settings, costs)

    def unready_reason(self) -> str | None:
        """Why the server cannot serve new sessions now (`/ready`), or None when it can."""
        if not self.accepting:
            return "The server is starting or shutting down."
        if not self.worker.running:
            return f"The render worker of the {self.engine.name} engine has stopped."
        return None

    async def decode_audio(self, data: bytes) -> DecodedAudio:
        """An uploaded file decoded in a worker process, within the upload limits.

        Raises `DecodeError` (400, 413, 415, 422: the decoder's refusals and the worker's
        limits) and `DecodeBusyError` (503, every decode slot taken).
        """
        settings = self.settings
        return await self.audio_decoders.run(
            decode_audio,
            data,
            settings.max_audio_seconds,
            settings.decode_max_sample_rate,
            settings.decode_max_channels,
        )

    async def _precompute(self, preparation: Preparation) -> None:
        """Let the engine compute what a new avatar needs (MuseTalk's latents) right away,
        so that its first session starts without that wait."""
        avatar = await asyncio.to_thread(load_prepared, preparation.directory)
        await self.worker.call(self.engine.precompute, avatar)

    async def close(self) -> None:
        self.accepting = False
        await self.sessions.close_all()
        await self.renders.close()
        await self.preparations.close()
        await self.llm.close()
        self.audio_decoders.close()
        self.video_decoders.close()
        self.worker.close()
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
        if self._gc_frozen:
            _thaw_heap()
            self._gc_frozen = False
