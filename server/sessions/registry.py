"""All live sessions: creation within limits, look-up, expiry and clean-up."""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from server.avatars.store import AvatarStore
from server.capacity import DEFAULT_SHAPE, StreamShape
from server.lipsync.worker import LipSyncWorker
from server.media.encoding import MediaEncoding
from server.metrics import ServerMetrics
from server.memory import FreedMemory
from server.sessions.admission import REASON_SESSION_LIMIT, AdmissionControl
from server.sessions.session import Session, SessionError, SessionParams
from server.settings import Settings

logger = logging.getLogger(__name__)

# How often idle sessions are looked for, at most.
REAP_INTERVAL_SECONDS = 1.0


class SessionNotFoundError(SessionError):
    status = 404


class TooManySessionsError(SessionError):
    status = 503


class SessionRegistry:
    def __init__(
        self,
        settings: Settings,
        worker: LipSyncWorker,
        avatars: AvatarStore,
        admission: AdmissionControl,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._settings = settings
        self.admission = admission
        self._metrics = metrics or ServerMetrics()
        self._worker = worker
        self._avatars = avatars
        self._sessions: dict[str, Session] = {}
        self._reserved = 0
        """Slots taken by creations still awaiting their avatar: counted against the limit
        before the first await, so that creations arriving together cannot overshoot it."""
        self._closing = False
        self._freed = FreedMemory()
        self._media = MediaEncoding()
        """The encoding pools and shared idle loops all sessions use."""
        self._reaper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    @property
    def max_sessions(self) -> int:
        """MAX_SESSIONS, or without it as many sessions as can all speak at once at the
        default parameters within the capacity budget."""
        return self._settings.max_sessions or self.admission.model.speaking_sessions(DEFAULT_SHAPE)

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_idle())

    async def create(self, params: SessionParams) -> Session:
        if self._closing:
            raise TooManySessionsError("The server is shutting down; try another one or later.")
        limit = self.max_sessions
        if len(self._sessions) + self._reserved >= limit:
            self.admission.refused(REASON_SESSION_LIMIT)
            raise TooManySessionsError(
                f"The server is at its limit of {limit} sessions; "
                "end one (DELETE) or try again later.",
                retry_after_seconds=self._settings.capacity_retry_after_seconds,
                reason=REASON_SESSION_LIMIT,
            )
        # Its load is held from here (before any await) until it is counted as a session;
        # the avatar's size is not known yet, so it is reserved at the reference size.
        reservation = self.admission.reserve_session(StreamShape(params.fps, params.playback_fps))
        self._reserved += 1
        try:
            avatar = await self._avatars.acquire(params.avatar_id)  # AvatarNotFoundError: 404
        finally:
            self._reserved -= 1
            self.admission.release_session(reservation)  # no await until it is a session
        try:
            if self._closing:
                raise TooManySessionsError("The server is shutting down; try another one or later.")
            session = Session(
                params, avatar, self._worker, self._settings, on_lost=self._lost,
                metrics=self._metrics, admission=self.admission, media=self._media,
            )
        except BaseException:
            self._avatars.release(params.avatar_id)
            raise
        self._sessions[session.id] = session
        self._metrics.session_opened(session)
        session.start()
        logger.info(
            "session %s created: avatar %s, user %s, fps %d, playback %d",
            session.id, params.avatar_id, params.user_id, params.fps, params.playback_fps,
            extra={"session_id": session.id},
        )
        return session

    def find(self, session_id: str) -> Session | None:
        """The live session, or None; its idle timer is left as it is."""
        session = self._sessions.get(session_id)
        return None if session is None or session.closed else session

    def get(self, session_id: str) -> Session:
        """The session, its idle timer reset; 404 if unknown, ended or expired."""
        session = self._sessions.get(session_id)
        if session is None or session.closed:
            raise SessionNotFoundError(f"Session {session_id!r} does not exist or has expired.")
        session.touch()
        return session

    async def close(self, session_id: str, reason: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            raise SessionNotFoundError(f"Session {session_id!r} does not exist or has expired.")
        try:
            await session.close(reason)
        finally:
            self._avatars.release(session.params.avatar_id)
            self._metrics.session_closed(session)
            self.admission.changed()
            self._freed.release_soon()

    async def close_all(self) -> None:
        self._closing = True
        if self._reaper is not None:
            self._reaper.cancel()
            with suppress(asyncio.CancelledError):
                await self._reaper
        await asyncio.gather(
            *(self.close(session_id, "server shutting down") for session_id in list(self._sessions)),
            return_exceptions=True,
        )
        await self._freed.close()
        self._media.close()

    async def _lost(self, session: Session, reason: str) -> None:
        if self._sessions.get(session.id) is session:
            await self.close(session.id, reason)

    async def _reap_idle(self) -> None:
        ttl = self._settings.session_idle_ttl_seconds
        while True:
            await asyncio.sleep(min(REAP_INTERVAL_SECONDS, ttl / 4))
            for session in list(self._sessions.values()):
                if session.idle_seconds() > ttl and self._sessions.get(session.id) is session:
                    try:
                        await self.close(session.id, f"idle for more than {ttl:g} s")
                    except Exception:
                        logger.exception(
                            "closing expired session %s failed", session.id,
                            extra={"session_id": session.id},
                        )
