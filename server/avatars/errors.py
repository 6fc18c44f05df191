"""Why an avatar cannot be prepared, found or removed: each with its HTTP status."""

from __future__ import annotations

from server.refusal import Refusal


class AvatarError(Refusal):
    """Why an avatar cannot be prepared, found or removed."""


class VideoError(AvatarError):
    """A video that cannot become an avatar: 400 unreadable, 413 too long or large, 415 no
    video stream, 422 too short or without a usable face."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status)


class AvatarNotFoundError(AvatarError, LookupError):
    status = 404

    def __init__(self, avatar_id: str, available: list[str]) -> None:
        super().__init__(
            f"Unknown avatar {avatar_id!r}; available: {', '.join(available) or 'none'}.",
            available_avatars=available,
        )
        self.avatar_id = avatar_id
        self.available = available


class AvatarExistsError(AvatarError):
    """The id is taken by an avatar prepared from another video."""

    status = 409


class AvatarInUseError(AvatarError):
    status = 409


class LandmarksUnavailableError(AvatarError):
    """No face detector can run here; the message says how to get one."""

    status = 503


class BuiltInAvatarError(AvatarError):
    """The built-in avatar cannot be replaced or removed."""

    status = 403


class WeightsUnusableError(AvatarError):
    """A preparation weight file in MODELS_DIR is there but cannot be loaded."""

    status = 500


class AvatarVersionError(AvatarError):
    """A prepared avatar whose recipe is another MuseTalk version's than the one running."""

    status = 409

    def __init__(self, avatar_id: str, prepared_for: str, running: str) -> None:
        super().__init__(
            f"Avatar {avatar_id!r} was prepared for MuseTalk {prepared_for}, but this server runs "
            f"MuseTalk {running}, whose model needs another face box and mask. Prepare it again "
            f"for {running}: `avatar-server prepare-avatar VIDEO --avatar-id {avatar_id} --force "
            f"--musetalk-version {running}`, or POST /avatars with force=true and "
            f"musetalk_version={running}."
        )
        self.prepared_for = prepared_for
        self.running = running
