"""The running server's parts, built from settings and shut down together."""

from __future__ import annotations

import asyncio
import logging

from server.avatars.jobs import PreparationJobs
from server.chat.llm import ChatCompletions
from server.avatars.preparation import Preparation, Preparer
from server.avatars.storage import load_prepared, remove_leftovers
from server.avatars.store import AvatarStore
from server.lipsync.selection import EngineChoice, select_engine
from server.lipsync.worker import LipSyncWorker
from server.sessions.registry import SessionRegistry
from server.settings import Settings
from server.tts.selection import build_tts

logger = logging.getLogger(__name__)


class AvatarServer:
    """Engine, render worker, avatars and sessions: what the HTTP layer talks to."""

    def __init__(self, settings: Settings, choice: EngineChoice | None = None) -> None:
        self.settings = settings
        self.choice = choice or select_engine(settings)
        self.engine = self.choice.engine
        logger.info("lip-sync engine: %s (%s)", self.engine.name, self.choice.reason)
        self.worker = LipSyncWorker(self.engine, settings.lipsync_max_batch)
        self.preparer = Preparer.from_settings(settings)
        self.avatars = AvatarStore(self.worker, self.preparer)
        self.preparations = PreparationJobs(self.preparer, self._precompute)
        self.sessions = SessionRegistry(settings, self.worker, self.avatars)
        self.tts = build_tts(settings)
        logger.info(
            "text to speech: %s (%s)", self.tts.name,
            self.tts.unavailable_reason() or f"default voice {self.tts.default_voice()!r}",
        )
        self.llm = ChatCompletions(
            settings.llm_url, settings.llm_key, settings.llm_model, settings.llm_timeout_seconds
        )

    async def start(self) -> None:
        folder = self.settings.avatars_dir
        for name in remove_leftovers(folder):
            logger.info("removed %s, left in %s by an interrupted preparation", name, folder)
        self.sessions.start()

    async def _precompute(self, preparation: Preparation) -> None:
        """Let the engine compute what a new avatar needs (MuseTalk's latents) right away,
        so that its first session starts without that wait."""
        avatar = await asyncio.to_thread(load_prepared, preparation.directory)
        await self.worker.call(self.engine.precompute, avatar)

    async def close(self) -> None:
        await self.sessions.close_all()
        await self.preparations.close()
        await self.llm.close()
        self.worker.close()
