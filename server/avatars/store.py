"""The avatars sessions can use, each loaded once and shared by all its sessions."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from server.avatars.demo import prepare_demo
from server.avatars.errors import (
    AvatarError,
    AvatarInUseError,
    AvatarNotFoundError,
    BuiltInAvatarError,
    LandmarksUnavailableError,
)
from server.avatars.preparation import Preparer
from server.avatars.storage import (
    AvatarFormatError,
    check_avatar_id,
    load_prepared,
    prepared_ids,
    read_metadata,
    remove_prepared,
)
from server.lipsync.demo.face import DEMO_AVATAR_ID, build_demo_avatar
from server.lipsync.engine import Avatar, LoadedAvatar
from server.lipsync.worker import LipSyncWorker

logger = logging.getLogger(__name__)

BUILT_IN_AVATARS = (DEMO_AVATAR_ID,)


def check_new_avatar_id(avatar_id: str) -> None:
    """Refuse an id a new avatar cannot have: 422 malformed, 403 the built-in's."""
    try:
        check_avatar_id(avatar_id)
    except ValueError as error:
        raise AvatarError(f"Invalid avatar id: {error}.", 422) from None
    if avatar_id in BUILT_IN_AVATARS:
        raise BuiltInAvatarError(
            f"{avatar_id!r} is the built-in avatar's id; choose another one for yours."
        )


@dataclass(frozen=True)
class _Loaded:
    preparation_id: str | None
    avatar: LoadedAvatar


class AvatarStore:
    """The built-in avatar and those prepared in AVATARS_DIR.

    An avatar is loaded on first use: read from disk in a thread, then given to the engine
    through the render worker (which precomputes what rendering needs, on its device). It
    stays in memory, shared by every session that uses it, and its users are counted so
    that one in use is never removed. When its folder is prepared again (by a job or the
    CLI), the next session gets the new one; sessions already running keep theirs.
    """

    def __init__(self, worker: LipSyncWorker, preparer: Preparer) -> None:
        self._worker = worker
        self._preparer = preparer
        self._loaded: dict[str, _Loaded] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    def available(self) -> list[str]:
        return sorted(set(BUILT_IN_AVATARS) | set(prepared_ids(self._preparer.avatars_dir)))

    def exists(self, avatar_id: str) -> bool:
        return avatar_id in BUILT_IN_AVATARS or avatar_id in prepared_ids(self._preparer.avatars_dir)

    def users(self, avatar_id: str) -> int:
        return self._users.get(avatar_id, 0)

    def metadata(self, avatar_id: str) -> dict[str, Any] | None:
        """avatar.json of a prepared avatar (the demo once prepared); None otherwise."""
        try:
            return read_metadata(self._preparer.avatars_dir / avatar_id)
        except AvatarFormatError:
            return None

    async def acquire(self, avatar_id: str) -> LoadedAvatar:
        """The avatar, loaded if needed; pair every call with `release`."""
        if not self.exists(avatar_id):
            raise AvatarNotFoundError(avatar_id, self.available())
        async with self._lock(avatar_id):
            loaded = self._loaded.get(avatar_id)
            if loaded is None or loaded.preparation_id != self._preparation_id(avatar_id):
                loaded = await self._load(avatar_id)
                self._loaded[avatar_id] = loaded
            self._users[avatar_id] = self._users.get(avatar_id, 0) + 1
        return loaded.avatar

    def release(self, avatar_id: str) -> None:
        users = self._users.get(avatar_id, 0) - 1
        if users > 0:
            self._users[avatar_id] = users
        else:
            self._users.pop(avatar_id, None)

    async def delete(self, avatar_id: str) -> None:
        """Remove a prepared avatar from disk and memory.

        Raises 403 for the built-in one, 404 for an unknown one, 409 while sessions use it.
        """
        if avatar_id in BUILT_IN_AVATARS:
            raise BuiltInAvatarError(f"The built-in avatar {avatar_id!r} cannot be deleted.")
        if not self.exists(avatar_id):
            raise AvatarNotFoundError(avatar_id, self.available())
        async with self._lock(avatar_id):
            users = self.users(avatar_id)
            if users:
                raise AvatarInUseError(
                    f"Avatar {avatar_id!r} is in use by {users} session(s); end them "
                    "(DELETE /webrtc/sessions/{id}) and try again."
                )
            await asyncio.to_thread(remove_prepared, self._preparer.avatars_dir, avatar_id)
            self._loaded.pop(avatar_id, None)
        logger.info("avatar %s deleted", avatar_id)

    def _lock(self, avatar_id: str) -> asyncio.Lock:
        return self._locks.setdefault(avatar_id, asyncio.Lock())

    def _preparation_id(self, avatar_id: str) -> str | None:
        metadata = self.metadata(avatar_id)
        return metadata["preparation_id"] if metadata is not None else None

    async def _load(self, avatar_id: str) -> _Loaded:
        try:
            avatar = await asyncio.to_thread(self._read, avatar_id)
        except AvatarFormatError:  # removed or replaced meanwhile
            raise AvatarNotFoundError(avatar_id, self.available()) from None
        loaded = await self._worker.call(self._worker.engine.load_avatar, avatar)
        width, height = avatar.size
        logger.info(
            "avatar %s loaded for engine %s: %d frames, %dx%d",
            avatar_id, self._worker.engine.name, len(avatar.frames), width, height,
        )
        return _Loaded(avatar.metadata.get("preparation_id"), loaded)

    def _read(self, avatar_id: str) -> Avatar:
        if avatar_id == DEMO_AVATAR_ID:
            try:
                prepare_demo(self._preparer)
            except LandmarksUnavailableError as error:
                logger.warning("%s; the demo avatar is used as drawn, unprepared", error)
                return build_demo_avatar()
        return load_prepared(self._preparer.avatars_dir / avatar_id)
