"""The avatars sessions can use, each loaded once and shared by all its sessions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from server.lipsync.demo.face import DEMO_AVATAR_ID, build_demo_avatar
from server.lipsync.engine import Avatar, LoadedAvatar
from server.lipsync.worker import LipSyncWorker

logger = logging.getLogger(__name__)

BUILT_IN_AVATARS: Mapping[str, Callable[[], Avatar]] = {DEMO_AVATAR_ID: build_demo_avatar}


class AvatarNotFoundError(LookupError):
    def __init__(self, avatar_id: str, available: list[str]) -> None:
        super().__init__(
            f"Unknown avatar {avatar_id!r}; available: {', '.join(available) or 'none'}."
        )
        self.avatar_id = avatar_id
        self.available = available


class AvatarStore:
    """Loads avatars on first use through the render worker and counts their users."""

    def __init__(
        self,
        worker: LipSyncWorker,
        built_in: Mapping[str, Callable[[], Avatar]] = BUILT_IN_AVATARS,
    ) -> None:
        self._worker = worker
        self._built_in = dict(built_in)
        self._loaded: dict[str, LoadedAvatar] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    def available(self) -> list[str]:
        return sorted(self._built_in)

    def users(self, avatar_id: str) -> int:
        return self._users.get(avatar_id, 0)

    async def acquire(self, avatar_id: str) -> LoadedAvatar:
        """The avatar, loaded if needed; pair every call with `release`."""
        if avatar_id not in self._built_in:
            raise AvatarNotFoundError(avatar_id, self.available())
        lock = self._locks.setdefault(avatar_id, asyncio.Lock())
        async with lock:
            loaded = self._loaded.get(avatar_id)
            if loaded is None:
                loaded = await self._worker.call(self._load, avatar_id)
                self._loaded[avatar_id] = loaded
        self._users[avatar_id] = self._users.get(avatar_id, 0) + 1
        return loaded

    def release(self, avatar_id: str) -> None:
        users = self._users.get(avatar_id, 0) - 1
        if users > 0:
            self._users[avatar_id] = users
        else:
            self._users.pop(avatar_id, None)

    def _load(self, avatar_id: str) -> LoadedAvatar:
        avatar = self._built_in[avatar_id]()
        loaded = self._worker.engine.load_avatar(avatar)
        width, height = avatar.size
        logger.info(
            "avatar %s loaded for engine %s: %d frames, %dx%d",
            avatar_id, self._worker.engine.name, len(avatar.frames), width, height,
        )
        return loaded
