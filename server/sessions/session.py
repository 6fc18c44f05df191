"""A session: one avatar, one media clock, one peer connection at a time, its speech."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from aiortc import RTCDataChannel, RTCIceCandidate, RTCPeerConnection, RTCSessionDescription

from server.chat.conversation import Conversation
from server.lipsync.engine import LoadedAvatar
from server.lipsync.worker import LipSyncWorker
from server.media.clock import SessionClock
from server.media.ice_servers import SessionIceServers
from server.media.playout import Playout, PlayoutEvent, PlayoutEventKind, SyncSettings
from server.media.candidates import RTP_COMPONENT, parse_candidate
from server.media.offer import OfferSummary, check_offer
from server.media.rtc import restrict_host_addresses, rtc_configuration
from server.media.encoding import MediaEncoding
from server.media.tracks import AvatarAudioTrack, AvatarVideoTrack, attach_sender
from server.media.utterance import Utterance
from server.media.video_encoder import scaled_size
from server.metrics import ServerMetrics
from server.node_ids import node_scoped
from server.sessions.admission import AdmissionControl
from server.sessions.channels import NATIVE, ChannelDialect
from server.sessions.events import EventFanout, SessionEvent
from server.sessions.queue import (
    INTERRUPTED,
    Admission,
    BusyError,  # noqa: F401 - the 409 of speaking, where it was before the queue
    Interruption,
    SpeechMode,
    SpeechQueue,
)
from server.sessions.speech import render_utterance
from server.sessions.streamed_speech import (
    AudioArrival, lookahead_frames, render_growing_utterance, stream_start_margin,
)
from server.refusal import Refusal
from server.settings import Settings

logger = logging.getLogger(__name__)

RECEIVING_RETRY_AFTER_SECONDS = 1.0
"""What a second upload is told to wait while the first is still received or decoded."""
# An answer's directions in which the server sends (the transceiver's currentDirection).
SENDING_DIRECTIONS = ("sendonly", "sendrecv")

CONNECTING_WAIT_SECONDS = 2.0
"""How long speech sent while the session's connection is being set up waits for it to be
up before it is refused as not connected (`connection_settled`)."""
CONNECTING_STATES = ("new", "connecting")

EVENTS_CHANNEL_LABEL = "events"
"""A data channel the client may open; the session sends its events on it as JSON."""
MAX_EARLY_CANDIDATES = 64
"""Candidates kept while a server offer awaits its answer; more is a client gone wrong."""
# The token in the session's player_url (README, "Access"): 256 bits, 43 characters.
TOKEN_BYTES = 32


@dataclass(frozen=True)
class SessionParams:
    avatar_id: str = "demo"
    user_id: str | None = None
    fps: int = 10
    playback_fps: int = 15
    batch_size: int = 2
    chunk_duration: float = 2.0


class SessionError(Refusal):
    """A request the session refuses."""


class NotConnectedError(SessionError):
    status = 409


class NegotiationError(SessionError):
    status = 400


class SessionClosedError(SessionError):
    status = 404


class Session:
    """Owns the peer connection, the tracks, the playout, its speech queue and events."""

    def __init__(
        self,
        params: SessionParams,
        avatar: LoadedAvatar,
        worker: LipSyncWorker,
        settings: Settings,
        on_lost: Callable[[Session, str], Awaitable[None]],
        metrics: ServerMetrics | None = None,
        admission: AdmissionControl | None = None,
        media: MediaEncoding | None = None,
    ) -> None:
        self.id = node_scoped(settings.node_id, secrets.token_urlsafe(12))
        # Lines about this session carry its id as a field (LOG_FORMAT=json).
        self._log = logging.LoggerAdapter(logger, {"session_id": self.id})
        self._metrics = metrics or ServerMetrics()
        self.token = secrets.token_urlsafe(TOKEN_BYTES)  # never logged
        self.params = params
        self.ice_servers = SessionIceServers(settings, self.id)
        """What its clients are told to use, and what its own peer connections use."""
        self.avatar = avatar
        self._media = media or MediaEncoding(video_threads=1)
        self._owns_media = media is None  # made on its own (tests): its pools are its own
        self.created_at = time.time()
        self.last_activity = time.monotonic()
        self._worker = worker
        self._settings = settings
        self._on_lost = on_lost
        self._admission = admission
        """Whether the server has the capacity for this session's speech (503 if not)."""
        self.events = EventFanout(settings.events_listener_backlog, {"session_id": self.id})
        self.events.add_sink(self._send_to_channels)
        self._published_state = "waiting"
        self.conversation = Conversation(
            settings.llm_system_prompt, settings.chat_history_messages, settings.chat_history_chars
        )
        """Its chat with the LLM (POST /chat)."""
        self.clock = SessionClock()
        self.playout = Playout(
            avatar.avatar.cycle,
            params.fps,
            SyncSettings(
                settings.audio_prebuffer_seconds,
                settings.audio_max_lead_seconds,
                settings.audio_max_lag_seconds,
                stream_prebuffer_seconds=settings.stream_prebuffer_seconds,
                stream_rebuffer_seconds=settings.stream_rebuffer_seconds,
                stream_start_margin_seconds=stream_start_margin(params.fps, params.playback_fps),
            ),
            self.clock,
            on_event=self._on_playout_event,
        )
        self._speech = SpeechQueue(
            self.playout, self._render, settings.max_queued_utterances, self._on_dropped
        )
        self._arrivals: weakref.WeakKeyDictionary[Utterance, AudioArrival] = (
            weakref.WeakKeyDictionary()
        )
        """The growing (streamed) utterances, and what wakes their renderers."""
        self._pc: RTCPeerConnection | None = None
        self._state_changed = asyncio.Event()
        """Set at each change of the connection's state (`connection_settled` waits on it)."""
        self._audio: AvatarAudioTrack | None = None
        self._video: AvatarVideoTrack | None = None
        self._channels: list[tuple[RTCDataChannel, ChannelDialect]] = []
        # Client-created channels the session talks on, by label, with their dialect.
        self._channel_dialects: dict[str, ChannelDialect] = {EVENTS_CHANNEL_LABEL: NATIVE}
        self.connection_id: str | None = None
        """A fresh id for each peer connection (a WHEP resource is one); None without one."""
        self.output_height: int | None = None
        """Video frames are scaled to this height from the next connection on (TWIN's
        `responseResolution`); None: the avatar's own size."""
        self._early_candidates: list[RTCIceCandidate | None] = []
        self._candidates_added = 0  # remote candidates given to the current connection
        self._end_of_candidates_held = False  # see `_add_candidate`
        self._awaiting_answer = False
        self._negotiation = asyncio.Lock()
        self._receiving = False
        self._grace_task: asyncio.Task[None] | None = None
        """Ends the session unless an offer comes: see `_wait_for_offer`."""
        self._connect_timer: asyncio.Task[None] | None = None
        self._offer: OfferSummary | None = None
        """What the current connection's offer holds; candidates are checked against it."""
        self.ever_connected = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.connections = 0
        self.closed = False
        self.close_reason: str | None = None

    # --- state ---------------------------------------------------------------------------

    @property
    def connection_state(self) -> str:
        return self._pc.connectionState if self._pc is not None else "none"

    @property
    def connected(self) -> bool:
        return self.connection_state == "connected"

    @property
    def state(self) -> str:
        """waiting | connecting | idle | speaking | reconnecting | closed."""
        if self.closed:
            return "closed"
        if self._pc is None:
            return "reconnecting" if self.connections else "waiting"
        if not self.connected:
            return "connecting"
        return "speaking" if self.playout.utterance is not None else "idle"

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def idle_seconds(self) -> float:
        if self.playout.utterance is not None:
            return 0.0
        return time.monotonic() - self.last_activity

    def describe(self) -> dict[str, Any]:
        utterance = self.playout.utterance
        return {
            "session_id": self.id,
            "state": self.state,
            "connection_state": self.connection_state,
            "connections": self.connections,
            **asdict(self.params),
            "created_at": self.created_at,
            "expires_in_seconds": max(
                0.0, self._settings.session_idle_ttl_seconds - self.idle_seconds()
            ),
            "utterance": None
            if utterance is None
            else {
                "utterance_id": utterance.id,
                "state": utterance.state.value,
                "duration_seconds": utterance.duration,
                "position_seconds": self.playout.position(),
                "frames_rendered": utterance.ready,
                "frame_count": utterance.frame_count,
            },
            "queue": [
                {"utterance_id": u.id, "position": i + 1, "duration_seconds": u.duration}
                for i, u in enumerate(self._speech.queued())
            ],
            "sync": asdict(self.playout.stats),
            "media": {
                "audio_frames_sent": self._audio.frames_sent if self._audio else 0,
                "video_frames_sent": self._video.frames_sent if self._video else 0,
                "video_frames_skipped": self._video.frames_skipped if self._video else 0,
                "video_send_latency_ms": round(self._video.send_latency * 1000, 2)
                if self._video
                else None,
                "video_frames_shared": self._video.frames_shared if self._video else 0,
                "video_frames_repeated": self._video.frames_repeated if self._video else 0,
                "video_keyframe_requests": self._video.keyframe_requests if self._video else 0,
                "video_grid_moves": self._video.rephased if self._video else 0,
            },
        }

    @property
    def video_track(self) -> AvatarVideoTrack | None:
        """The video track of the current connection, if any."""
        return self._video

    # --- signalling ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the wait for a client: a session never offered ends after
        SESSION_CONNECT_TIMEOUT_SECONDS."""
        self._wait_for_offer()

    async def answer(self, sdp: str, kind: str) -> RTCSessionDescription:
        """Answer a client's offer with a new peer connection, replacing any earlier one.

        The offer is checked and the new connection negotiated in full first: a refused
        offer (400, 413) leaves the working connection exactly as it was.
        """
        if kind != "offer":
            raise NegotiationError(f"Expected an SDP of type 'offer', got {kind!r}.")
        self._check_open()
        offer = check_offer(sdp, self._settings.max_offer_bytes)
        async with self._negotiation:
            self._check_open()
            try:
                pc, audio, video = await self._negotiate(sdp)
            except BaseException:
                self._wait_for_offer()  # a session left without a connection still times out
                raise
            if self.closed:
                await pc.close()
                self._check_open()
            # Told first, so that the client being replaced (another tab or WebView showing
            # the same session) stops instead of reconnecting and replacing this one.
            self.events.publish("connection_replaced")
            old, self._pc = self._pc, pc
            self._audio, self._video, self._offer = audio, video, offer
            self.connection_id = secrets.token_urlsafe(12)
            self._awaiting_answer = False  # a client offer in place of a server offer
            self._forget_candidates()
            self.connections += 1
            self._update_state()
            self._cancel_grace()
            if self._connect_timer is not None:
                self._connect_timer.cancel()
            self._connect_timer = self._spawn(self._fail_unless_connected(pc))
            if old is not None:
                await self._close_connection(old, "replaced by a new offer")
            self._log.info("session %s: answered offer (connection %d)", self.id, self.connections)
            return pc.localDescription

    async def _negotiate(
        self, sdp: str
    ) -> tuple[RTCPeerConnection, AvatarAudioTrack, AvatarVideoTrack]:
        """A new peer connection with the offer applied and its answer made; nothing of the
        session's current connection is touched. Raises NegotiationError (400)."""
        pc = RTCPeerConnection(rtc_configuration(self.ice_servers.current()))
        pc.on("connectionstatechange", lambda: self._on_connection_state(pc))
        pc.on("datachannel", self._on_datachannel)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            audio, video = self._make_tracks()
            attach_sender(pc.addTrack(audio), audio)
            attach_sender(pc.addTrack(video), video)
            restrict_host_addresses(pc, self._settings.ice_host_addresses)
            await pc.setLocalDescription(await pc.createAnswer())
            sending = {
                t.kind for t in pc.getTransceivers() if t.currentDirection in SENDING_DIRECTIONS
            }
            if not {"audio", "video"} <= sending:
                raise NegotiationError(
                    "The offer must receive both audio and video with a codec the server sends "
                    f"(it would receive: {', '.join(sorted(sending)) or 'nothing'})."
                )
        except NegotiationError:
            await asyncio.shield(pc.close())
            raise
        except BaseException as error:  # aiortc raises assorted errors for bad SDP
            await asyncio.shield(pc.close())
            if not isinstance(error, Exception):
                raise
            raise NegotiationError(f"The offer could not be used: {error}") from None
        return pc, audio, video

    async def create_offer(
        self, channel_label: str = EVENTS_CHANNEL_LABEL, dialect: ChannelDialect = NATIVE
    ) -> RTCSessionDescription:
        """The server-offer flow: offer a new peer connection (sendonly audio and video, and
        the events channel under `channel_label`, created by the server and speaking
        `dialect`), replacing any earlier one; the client's answer goes to `accept_answer`."""
        async with self._negotiation:
            pc = await self._new_connection()
            self._new_tracks()
            attach_sender(pc.addTransceiver(self._audio, direction="sendonly").sender, self._audio)
            attach_sender(pc.addTransceiver(self._video, direction="sendonly").sender, self._video)
            self._add_channel(pc.createDataChannel(channel_label), dialect)
            restrict_host_addresses(pc, self._settings.ice_host_addresses)
            try:
                await pc.setLocalDescription(await pc.createOffer())
            except Exception:
                await self._drop_connection("negotiation failed")
                raise
            self._awaiting_answer = True
            self._cancel_grace()
            if self._connect_timer is not None:
                self._connect_timer.cancel()
            self._connect_timer = self._spawn(self._fail_unless_connected(pc))
            self._log.info("session %s: offered connection %d", self.id, self.connections)
            return pc.localDescription

    async def accept_answer(self, sdp: str) -> None:
        """Apply the client's answer to `create_offer`, then the candidates sent before it."""
        async with self._negotiation:
            self._check_open()
            pc = self._pc
            if pc is None or not self._awaiting_answer:
                raise NotConnectedError(
                    "There is no server offer awaiting an answer: ask for one first "
                    "(POST /webrtc/sessions/{id}/server-offer, or an empty POST /whep/{id})."
                )
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            except Exception as error:  # aiortc raises assorted errors for bad SDP
                await self._drop_connection("negotiation failed")
                raise NegotiationError(f"The answer could not be used: {error}") from None
            self._awaiting_answer = False
            early, self._early_candidates = self._early_candidates, []
            for candidate in early:
                await self._add_candidate(pc, candidate)
            self._log.info("session %s: answer accepted (%d early candidates)", self.id, len(early))

    @property
    def remote_sdp(self) -> str | None:
        """The remote description of the current connection, once there is one."""
        pc = self._pc
        return None if pc is None or pc.remoteDescription is None else pc.remoteDescription.sdp

    async def add_candidate(self, init: dict[str, Any]) -> None:
        """Add a trickled remote candidate; an empty one means the end of candidates.

        A refused candidate (400) changes nothing. While a server offer awaits its answer,
        candidates are kept and applied after it (clients race the two calls)."""
        self._check_open()
        pc, offer = self._pc, self._offer
        mids = offer.mids if pc is not None and offer is not None else None
        candidate = parse_candidate(init, mids)  # raises CandidateError (400)
        if pc is not None and self._awaiting_answer:
            if candidate is not None and candidate.component != RTP_COMPONENT:
                return  # an RTCP candidate: rtcp-mux carries RTCP on component 1
            if len(self._early_candidates) >= MAX_EARLY_CANDIDATES:
                raise NotConnectedError(
                    f"{MAX_EARLY_CANDIDATES} candidates already wait for the answer: send it."
                )
            self._early_candidates.append(candidate)
            return
        if pc is None or pc.remoteDescription is None:
            raise NotConnectedError("Send the offer before its ICE candidates.")
        if candidate is not None and candidate.component != RTP_COMPONENT:
            return  # an RTCP candidate: rtcp-mux carries RTCP on component 1
        await self._add_candidate(pc, candidate)

    async def _add_candidate(self, pc: RTCPeerConnection, candidate: RTCIceCandidate | None) -> None:
        """Give `pc` a remote candidate, or the end of them (None) once it has one.

        Clients that trickle over HTTP send each candidate in its own request, without
        waiting for the one before (D-ID's SDK does), so the end can arrive first. Given
        first, it would make aioice drop the component (no candidates for it), ignore the
        candidates after it, and fail the connection even as its checks succeed. Held
        until a candidate came, it changes nothing; without one ICE still connects
        through the client's checks (peer-reflexive candidates)."""
        if candidate is None:
            if self._candidates_added == 0:
                self._end_of_candidates_held = True
                return
        else:
            self._candidates_added += 1
        await pc.addIceCandidate(candidate)
        if candidate is not None and self._end_of_candidates_held:
            self._end_of_candidates_held = False
            await pc.addIceCandidate(None)

    def _forget_candidates(self) -> None:
        """A new (or no) connection: nothing trickled for the last one counts."""
        self._early_candidates.clear()
        self._candidates_added = 0
        self._end_of_candidates_held = False

    async def end_connection(self, connection_id: str, reason: str) -> bool:
        """End the peer connection `connection_id` (if it is still the current one); the
        session stays, waiting for a new offer until its idle timeout. False if it was not."""
        async with self._negotiation:
            if self.connection_id != connection_id or self._pc is None:
                return False
            self.events.publish("connection_ended", reason=reason)
            await self._drop_connection(reason)
            return True

    async def _new_connection(self) -> RTCPeerConnection:
        """A new peer connection in place of the current one (call with the lock held)."""
        self._check_open()
        # Told first, so that the client being replaced (another tab or WebView showing
        # the same session) stops instead of reconnecting and replacing this one.
        self.events.publish("connection_replaced")
        await self._drop_connection("replaced by a new offer")
        pc = RTCPeerConnection(rtc_configuration(self.ice_servers.current()))
        self._pc = pc
        self.connection_id = secrets.token_urlsafe(12)
        self.connections += 1
        self._update_state()
        pc.on("connectionstatechange", lambda: self._on_connection_state(pc))
        pc.on("datachannel", self._on_datachannel)
        return pc

    def _new_tracks(self) -> None:
        self._audio, self._video = self._make_tracks()

    def _make_tracks(self) -> tuple[AvatarAudioTrack, AvatarVideoTrack]:
        media = self._media
        avatar = self.avatar.avatar
        size = scaled_size(avatar.frames.shape, self.output_height)
        audio = AvatarAudioTrack(self.playout, self.clock)
        video = AvatarVideoTrack(
            self.playout, self.clock, media.idle_loops.pictures(avatar, size),
            self.params.playback_fps, media.video_executor,
            media.idle_loops.loop(avatar, self.params.fps, self.params.playback_fps, size),
        )
        return audio, video

    # --- speech --------------------------------------------------------------------------

    async def connection_settled(self, timeout: float = CONNECTING_WAIT_SECONDS) -> None:
        """Wait, at most `timeout`, while the connection is being set up (ICE and DTLS).

        A client that speaks as soon as its own side says connected is ahead of this side:
        when the server is the DTLS client (aiortc answers an offer with setup:active),
        the client's side is up once it has sent its last flight, and this side once that
        flight has arrived and been handled. Speech sent in between waits for it instead
        of being refused as not connected; what follows (`check_can_speak`) says 409 if
        the connection is not up by then.
        """
        deadline = time.monotonic() + timeout
        while self._pc is not None and self.connection_state in CONNECTING_STATES and not self.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._state_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._state_changed.wait(), remaining)

    def check_can_speak(
        self, mode: SpeechMode | None = SpeechMode.REJECT, wait_for_capacity: bool = False
    ) -> None:
        """Raise the 409 an upload in `mode` would get now, before it is even decoded, or
        the 503 of a server without the capacity for it (unless `wait_for_capacity`: the
        caller waits for its turn, `AdmissionControl.speech_turn`).

        `mode` None: not known yet (it may come with the form), so only the connection
        is checked; `speak` checks the rest.
        """
        self._check_open()
        if not self.connected:
            raise NotConnectedError(
                "No client is connected to this session yet: open its player_url, or "
                "POST an offer, and upload once the connection is up."
            )
        if mode is not None:
            self._speech.check(mode)  # BusyError, QueueFullError: 409
        if self._admission is not None and not wait_for_capacity:
            self._admission.check_speech(self)  # CapacityError: 503

    @contextlib.contextmanager
    def receiving_speech(
        self, mode: SpeechMode | None = SpeechMode.REJECT, wait_for_capacity: bool = False
    ) -> Iterator[None]:
        """Hold the session for one upload while it is received and decoded.

        Raises the 409 of `check_can_speak(mode)`, or a 409 while another upload holds it; so an
        upload is refused before its body is read, and no two are decoded for one session.
        """
        self.check_can_speak(mode, wait_for_capacity)
        if self._receiving:
            raise BusyError(
                "Another upload to this session is still being received or decoded; "
                "send the next one once the avatar has started speaking it.",
                retry_after_seconds=RECEIVING_RETRY_AFTER_SECONDS,
            )
        self._receiving = True
        try:
            yield
        finally:
            self._receiving = False

    def speak(
        self, samples: np.ndarray, mode: SpeechMode = SpeechMode.REJECT, keep_queue: bool = False
    ) -> Admission:
        """Speak `samples` (float32 mono 48 kHz) under the busy policy `mode`."""
        self.check_can_speak(mode)
        utterance = Utterance(
            samples,
            self.params.fps,
            start_counter=0,  # placed by the queue when its turn is next
            chunk_duration=self.params.chunk_duration,
        )
        return self._admit(utterance, mode, keep_queue)

    def speak_streamed(self, mode: SpeechMode = SpeechMode.REJECT, keep_queue: bool = False) -> Admission:
        """Admit a growing utterance whose audio arrives through `stream_append`."""
        self.check_can_speak(mode)
        utterance = Utterance(
            np.zeros(0, np.float32),
            self.params.fps,
            start_counter=0,
            chunk_duration=self.params.chunk_duration,
            complete=False,
            lookahead_frames=lookahead_frames(
                self._worker.engine.audio_lookahead_seconds, self.params.fps
            ),
        )
        self._arrivals[utterance] = AudioArrival()
        return self._admit(utterance, mode, keep_queue)

    def stream_append(self, utterance: Utterance, samples: np.ndarray) -> None:
        """More audio (float32 mono 48 kHz) of a streamed utterance."""
        if not utterance.active or utterance.complete or not len(samples):
            return
        utterance.append(samples)
        self._wake(utterance)
        self.touch()

    def stream_end(self, utterance: Utterance) -> None:
        """A streamed utterance's audio is complete; one with none is dropped."""
        if utterance.complete or not utterance.active:
            return
        if utterance.received == 0:
            self.stream_abandon(utterance, "no audio")
            return
        utterance.end()
        self._wake(utterance)
        self.events.publish(
            "utterance_complete", utterance_id=utterance.id,
            duration_seconds=round(utterance.duration, 3),
        )
        self._speech.ended()  # what follows it may be staged now that its end is known
        self._update_state()

    def stream_abandon(self, utterance: Utterance, reason: str) -> None:
        """Drop a streamed utterance (its client failed or went away before its end)."""
        if utterance.active:
            self._speech.discard(utterance, reason)
            self._update_state()

    def capacity_wait_event(self, position: int) -> None:
        """Tell the client its speech waits for the server's capacity, at `position` (1: next)."""
        self.events.publish("capacity_wait", position=position)

    def _wake(self, utterance: Utterance) -> None:
        arrival = self._arrivals.get(utterance)
        if arrival is not None:
            arrival.notify()

    def _admit(self, utterance: Utterance, mode: SpeechMode, keep_queue: bool) -> Admission:
        admission = self._speech.speak(utterance, mode, keep_queue)
        self.events.publish(
            "utterance_queued",
            utterance_id=utterance.id,
            position=admission.position,
            duration_seconds=round(utterance.duration, 3) if utterance.complete else None,
            mode=mode.value,
            streamed=not utterance.complete,
        )
        self._update_state()
        self.touch()
        self._log.info(
            "session %s: utterance %s (%s, position %d), %.2f s, %d frames",
            self.id, utterance.id, mode.value, admission.position, utterance.duration,
            utterance.frame_count,
        )
        return admission

    def interrupt(self, keep_queue: bool = False) -> Interruption:
        """Stop what the avatar says now (and drop the queue unless `keep_queue`)."""
        self._check_open()
        interruption = self._speech.interrupt(keep_queue)
        self._update_state()
        self.touch()
        return interruption

    def _render(self, utterance: Utterance) -> Awaitable[None]:
        arrival = self._arrivals.get(utterance)
        if arrival is not None:
            return render_growing_utterance(
                utterance, arrival, self.avatar, self._worker, self.playout,
                self.params.batch_size, self.id, on_failed=self._render_failed,
            )
        return render_utterance(
            utterance, self.avatar, self._worker, self.playout, self.params.batch_size, self.id,
            on_failed=self._render_failed,
        )

    def _render_failed(self, utterance: Utterance, message: str) -> None:
        self.events.publish("error", utterance_id=utterance.id, detail=message)
        self._speech.render_failed(utterance)
        self._update_state()

    def _on_dropped(self, utterance: Utterance, reason: str) -> None:
        self.events.publish("utterance_dropped", utterance_id=utterance.id, reason=reason)

    # --- ending ----------------------------------------------------------------------------

    async def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._speech.clear("session ended")
        self._update_state()
        self.events.publish("session_ended", reason=reason)
        self._cancel_grace()
        await self._drop_connection(reason)
        await self._speech.close()
        others = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        self.events.close()
        if self._owns_media:
            self._media.close()
        self._log.info("session %s closed: %s", self.id, reason)

    def _check_open(self) -> None:
        if self.closed:
            raise SessionClosedError(f"Session {self.id} has ended ({self.close_reason}).")

    async def _drop_connection(self, reason: str) -> None:
        pc, self._pc = self._pc, None
        self._state_changed.set()
        self._offer = None
        self._awaiting_answer = False
        self._forget_candidates()
        self.connection_id = None
        if pc is not None:
            await self._close_connection(pc, reason)
        self._update_state()

    async def _close_connection(self, pc: RTCPeerConnection, reason: str) -> None:
        """Close a connection that is no longer (or never became) the session's."""
        self._channels[:] = [(c, d) for c, d in self._channels if c.transport is not pc.sctp]
        self._speech.clear(reason)
        self._log.info("session %s: closing peer connection (%s)", self.id, reason)
        # Shielded: a second close() of aiortc's awaits the first one's future, and a task
        # cancelled there (the session closing) cancels that future, which then fails the
        # first close with InvalidStateError.
        await asyncio.shield(pc.close())

    def _on_connection_state(self, pc: RTCPeerConnection) -> None:
        if pc is not self._pc:
            return
        state = pc.connectionState
        self._log.info("session %s: connection %s", self.id, state)
        self._state_changed.set()
        self._update_state()
        if state == "connected":
            self.ever_connected = True
            self._cancel_grace()
            if self._connect_timer is not None:
                self._connect_timer.cancel()
                self._connect_timer = None
        elif state in ("failed", "closed"):
            self._spawn(self._connection_lost(pc, state))

    async def _fail_unless_connected(self, pc: RTCPeerConnection) -> None:
        """Fail a connection still not up after WEBRTC_CONNECT_TIMEOUT_SECONDS; the session
        itself ends if it never had a working connection, freeing its slot."""
        timeout = self._settings.webrtc_connect_timeout_seconds
        await asyncio.sleep(timeout)
        if pc is not self._pc or self.closed or pc.connectionState == "connected":
            return
        self._connect_timer = None
        if not self.ever_connected:
            await self._on_lost(self, f"no client connected within {timeout:g} s of its offer")
        else:
            await self._connection_lost(pc, f"not connected within {timeout:g} s")

    async def _connection_lost(self, pc: RTCPeerConnection, state: str) -> None:
        if pc is not self._pc or self.closed:
            return
        await self._drop_connection(f"connection {state}")
        self._cancel_grace()
        grace = self._settings.session_reconnect_grace_seconds
        self._grace_task = self._spawn(
            self._expire_after(grace, f"connection {state} and no new offer within {grace:g} s")
        )

    def _wait_for_offer(self) -> None:
        """Without a connection, end the session unless an offer comes in time (the
        reconnection grace once it has been connected, else the connect timeout)."""
        waiting = self._grace_task is not None and not self._grace_task.done()
        if self._pc is not None or waiting or self.closed:
            return
        if self.ever_connected:
            bound = self._settings.session_reconnect_grace_seconds
            reason = f"no working connection and no new offer within {bound:g} s"
        else:
            bound = self._settings.session_connect_timeout_seconds
            reason = f"no client connected within {bound:g} s"
        self._grace_task = self._spawn(self._expire_after(bound, reason))

    async def _expire_after(self, seconds: float, reason: str) -> None:
        await asyncio.sleep(seconds)
        if self._pc is None and not self.closed:
            self._grace_task = None
            await self._on_lost(self, reason)

    def _cancel_grace(self) -> None:
        if self._grace_task is not None:
            self._grace_task.cancel()
            self._grace_task = None

    # --- events to the client ----------------------------------------------------------

    def state_event(self) -> SessionEvent:
        """The session's state now, as the first event a new listener gets."""
        return self.events.event("state", state=self.state)

    def _update_state(self) -> None:
        state = self.state
        if state != self._published_state:
            self._published_state = state
            self.events.publish("state", state=state)
            if self._admission is not None:
                self._admission.changed()

    def accept_channel(self, label: str, dialect: ChannelDialect) -> None:
        """Talk `dialect` on the data channels the client creates under `label` (the
        native `events` label is always accepted)."""
        self._channel_dialects[label] = dialect

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        dialect = self._channel_dialects.get(channel.label)
        if dialect is not None:
            self._add_channel(channel, dialect)

    def _add_channel(self, channel: RTCDataChannel, dialect: ChannelDialect = NATIVE) -> None:
        """Send the session's events on `channel` in `dialect`, its state first, and give
        what the client sends on it to the dialect."""
        self._channels.append((channel, dialect))
        channel.on("open", lambda: self._send_state(channel, dialect))
        channel.on("message", lambda message: self._on_channel_message(dialect, message))
        if channel.readyState == "open":
            self._send_state(channel, dialect)

    def _send_state(self, channel: RTCDataChannel, dialect: ChannelDialect) -> None:
        for text in dialect.encode(self.state_event()):
            channel.send(text)

    def _on_channel_message(self, dialect: ChannelDialect, message: str | bytes) -> None:
        if self.closed:
            return
        try:
            dialect.receive(self, message)
        except Exception:  # a client's message must never break the session
            self._log.exception("session %s: a data channel message failed", self.id)

    def _on_playout_event(self, event: PlayoutEvent) -> None:
        if event.kind in (PlayoutEventKind.INPUT_UNDERRUN, PlayoutEventKind.INPUT_RESUMED):
            fields = {"utterance_id": event.utterance_id, "media_time": round(event.media_time, 3),
                      "position_seconds": round(event.played_seconds, 3)}
            if event.kind is PlayoutEventKind.INPUT_RESUMED:
                fields["waited_seconds"] = round(event.waited_seconds, 3)
            self.events.publish(event.kind.value, **fields)
            return
        if event.kind is not PlayoutEventKind.SPEAKING_STARTED:
            self.touch()
        elif event.start_delay is not None:
            self._metrics.speech_started(event.start_delay)
        fields: dict[str, Any] = {
            "utterance_id": event.utterance_id,
            "media_time": round(event.media_time, 3),
        }
        kind = event.kind.value
        if event.kind is PlayoutEventKind.SPEAKING_STARTED:
            fields["duration_seconds"] = round(event.duration_seconds, 3)
        else:
            fields["played_seconds"] = round(event.played_seconds, 3)
        if event.kind is PlayoutEventKind.UTTERANCE_CANCELLED:
            if event.reason == INTERRUPTED:
                kind = "utterance_interrupted"
                fields["duration_seconds"] = round(event.duration_seconds, 3)
            else:
                fields["reason"] = event.reason
        self.events.publish(kind, **fields)
        if event.kind is not PlayoutEventKind.SPEAKING_STARTED:
            self._speech.ended()
        self._update_state()

    def _send_to_channels(self, event: SessionEvent) -> None:
        for channel, dialect in self._channels:
            if channel.readyState == "open":
                for text in dialect.encode(event):
                    channel.send(text)

    def _spawn(self, coroutine: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
