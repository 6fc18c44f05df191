"""The server's Prometheus metrics: every metric name and help text lives here.

One `ServerMetrics` per `AvatarServer`, with its own `CollectorRegistry` (no global
state). What the server already counts (the sessions' sync figures, the render worker's
statistics) is read when `/metrics` is scraped; what happens once per request or per
utterance (refusals, decode failures, the time to the first audible sample) is counted
when it happens, through the methods below.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from server.lipsync.worker import LipSyncWorker
    from server.media.playout import SyncStats
    from server.refusal import Refusal
    from server.sessions.admission import AdmissionControl
    from server.sessions.registry import SessionRegistry
    from server.sessions.session import Session

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The media type of `ServerMetrics.exposition()` (Prometheus' text format)."""

SESSION_STATES = ("waiting", "connecting", "idle", "speaking", "reconnecting")
"""States of a live session (`Session.state`), each always exposed, 0 when none."""

TIME_TO_FIRST_FRAME_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
"""Seconds; the prebuffer default is 0.2 s, so most utterances should land near it."""

RENDER_BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
"""Frames per engine call; LIPSYNC_MAX_BATCH is at most 64 in practice."""

DECODE_FAILURE_KINDS = {400: "corrupt", 413: "too_large", 415: "unsupported", 422: "unusable"}
"""The `kind` label of a refused upload, by its status (issue 8's decode contract)."""

# The sessions' sync counters (`SyncStats` fields), as (field, metric name, help).
SYNC_COUNTERS = (
    ("utterances_started", "avatar_utterances_started", "Utterances whose audio began playing."),
    ("utterances_finished", "avatar_utterances_finished", "Utterances played to their end."),
    (
        "utterances_cancelled",
        "avatar_utterances_cancelled",
        "Utterances dropped before their end (session ended, peer went away, render failed).",
    ),
    ("speech_seconds", "avatar_speech_seconds", "Seconds of speech audio sent to clients."),
    (
        "audio_holds",
        "avatar_audio_holds",
        "Times the audio paused (sent silence) because rendering fell behind.",
    ),
    ("audio_hold_seconds", "avatar_audio_hold_seconds", "Seconds of silence sent by audio holds."),
    (
        "video_frames_late",
        "avatar_video_frames_late",
        "Video frames sent during speech that repeated an older frame (theirs was not rendered yet).",
    ),
    (
        "video_frames_held",
        "avatar_video_frames_held",
        "Video frames held back because the audio ran more than the max lag behind.",
    ),
)

# The capacity figures (`AdmissionControl.describe()` keys), as (metric name, key, help).
CAPACITY_GAUGES = (
    ("avatar_capacity_render_fps", "render_budget_fps",
     "Frames/s the render worker can render in real time (the budget, headroom taken off)."),
    ("avatar_capacity_encode_fps", "encode_budget_fps",
     "Reference-size video frames/s the media CPU can convert and encode (the budget)."),
    ("avatar_load_render_fps", "render_load_fps",
     "Frames/s of the render worker the admitted sessions and renders take."),
    ("avatar_load_encode_fps", "encode_load_fps",
     "Encode frames/s (and their CPU equivalent) the admitted sessions and renders take."),
    ("avatar_speech_waiting", "speech_waiting", "Speech requests waiting for capacity (wait=true)."),
)


class ServerMetrics:
    """The metrics of one server, and the hooks its parts call."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._refusals = Counter(
            "avatar_refusals",
            "Requests answered with an error, by HTTP status.",
            ["status"],
            registry=self.registry,
        )
        self._decode_failures = Counter(
            "avatar_decode_failures",
            "Refused speech uploads, by kind (corrupt, too_large, unsupported, unusable) "
            "and HTTP status.",
            ["kind", "status"],
            registry=self.registry,
        )
        self._decode_worker_crashes = Counter(
            "avatar_decode_worker_crashes",
            "Decode worker processes that died or were killed at a limit, by cause.",
            ["cause"],
            registry=self.registry,
        )
        self._time_to_first_frame = Histogram(
            "avatar_time_to_first_frame_seconds",
            "Seconds from accepting an utterance to its first audible sample.",
            buckets=TIME_TO_FIRST_FRAME_BUCKETS,
            registry=self.registry,
        )
        self._sessions_created = Counter(
            "avatar_sessions_created", "Sessions created.", registry=self.registry
        )
        self._open: dict[str, SyncStats] = {}
        self._ended = {name: 0.0 for name, _, _ in SYNC_COUNTERS}

    def watch(
        self, sessions: SessionRegistry, worker: LipSyncWorker, admission: AdmissionControl
    ) -> None:
        """Read the sessions' states, the worker's statistics and the capacity figures at
        every scrape."""
        self.registry.register(_ServerCollector(self, sessions, worker, admission))

    def exposition(self) -> bytes:
        """Every metric, in Prometheus' text format (`CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    # --- hooks -----------------------------------------------------------------------------

    def session_opened(self, session: Session) -> None:
        self._sessions_created.inc()
        self._open[session.id] = session.playout.stats

    def session_closed(self, session: Session) -> None:
        """Fold a session's final sync figures into the totals (counters never go down)."""
        stats = self._open.pop(session.id, None)
        if stats is not None:
            for name, value in asdict(stats).items():
                if name in self._ended:
                    self._ended[name] += value

    def speech_started(self, start_delay: float) -> None:
        """An utterance became audible `start_delay` s after it was accepted."""
        self._time_to_first_frame.observe(start_delay)

    def refused(self, status: int) -> None:
        self._refusals.labels(status=str(status)).inc()

    def upload_refused(self, error: Refusal) -> None:
        """A speech upload was refused while reading or decoding it."""
        kind = DECODE_FAILURE_KINDS.get(error.status, "other")
        self._decode_failures.labels(kind=kind, status=str(error.status)).inc()

    def decode_worker_crashed(self, cause: str = "crashed") -> None:
        """A decode worker process died (`crashed`) or was killed at a limit (e.g.
        `cpu_time`, `wall_time`, `memory`); the pool replaces it."""
        self._decode_worker_crashes.labels(cause=cause).inc()

    # --- read by the collector ---------------------------------------------------------------

    def sync_totals(self) -> dict[str, float]:
        """Each sync counter over every session, ended and live."""
        totals = dict(self._ended)
        for stats in self._open.values():
            for name in totals:
                totals[name] += getattr(stats, name)
        return totals


class _ServerCollector(Collector):
    """What the server already counts, read at scrape time."""

    def __init__(
        self,
        metrics: ServerMetrics,
        sessions: SessionRegistry,
        worker: LipSyncWorker,
        admission: AdmissionControl,
    ) -> None:
        self._metrics = metrics
        self._sessions = sessions
        self._worker = worker
        self._admission = admission

    def collect(self) -> Iterator[Metric]:
        yield from self._session_metrics()
        totals = self._metrics.sync_totals()
        for name, metric, help_text in SYNC_COUNTERS:
            yield CounterMetricFamily(metric, help_text, value=totals[name])
        yield from self._worker_metrics()
        yield from self._capacity_metrics()

    def _session_metrics(self) -> Iterable[Metric]:
        by_state = dict.fromkeys(SESSION_STATES, 0)
        for session in self._sessions.sessions():
            state = session.state
            if state in by_state:
                by_state[state] += 1
        gauge = GaugeMetricFamily("avatar_sessions", "Live sessions, by state.", labels=["state"])
        for state, count in by_state.items():
            gauge.add_metric([state], count)
        yield gauge
        yield GaugeMetricFamily(
            "avatar_sessions_max",
            "Most live sessions at once (MAX_SESSIONS, or what the capacity allows).",
            value=self._sessions.max_sessions,
        )

    def _capacity_metrics(self) -> Iterable[Metric]:
        figures = self._admission.describe()
        for name, key, help_text in CAPACITY_GAUGES:
            yield GaugeMetricFamily(name, help_text, value=figures[key])
        by_load = GaugeMetricFamily(
            "avatar_capacity_sessions", "Admitted sessions, by their load (idle or speaking).",
            labels=["load"],
        )
        by_load.add_metric(["idle"], figures["sessions_idle"])
        by_load.add_metric(["speaking"], figures["sessions_speaking"])
        yield by_load
        refusals = CounterMetricFamily(
            "avatar_capacity_refusals",
            "Sessions, speech and renders refused (503) for want of capacity or at the "
            "session limit, by reason.",
            labels=["reason"],
        )
        for reason, count in figures["refusals"].items():
            refusals.add_metric([reason], count)
        yield refusals

    def _worker_metrics(self) -> Iterable[Metric]:
        stats = self._worker.stats
        yield CounterMetricFamily(
            "avatar_frames_rendered", "Video frames rendered by the lip-sync engine.",
            value=stats.frames_rendered,
        )
        yield CounterMetricFamily(
            "avatar_frames_late", "Rendered frames delivered after their deadline.",
            value=stats.frames_late,
        )
        yield CounterMetricFamily(
            "avatar_render_jobs_dropped",
            "Render jobs given up by their session before they were rendered.",
            value=stats.jobs_dropped,
        )
        yield CounterMetricFamily(
            "avatar_render_busy_seconds",
            "Seconds the render worker spent in the engine (rendering and other engine work).",
            value=stats.busy_seconds,
        )
        sizes = dict(stats.batch_sizes)  # a copy: the worker thread adds to it
        buckets = []
        for bound in RENDER_BATCH_SIZE_BUCKETS:
            buckets.append((str(bound), sum(n for size, n in sizes.items() if size <= bound)))
        buckets.append(("+Inf", sum(sizes.values())))
        yield HistogramMetricFamily(
            "avatar_render_batch_size",
            "Frames per render batch (one engine call, frames of every session).",
            buckets=buckets,
            sum_value=sum(size * n for size, n in sizes.items()),
        )
