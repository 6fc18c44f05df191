"""Which lip-sync engine the server runs, and why (LIPSYNC_ENGINE)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from server.lipsync.demo.engine import DemoEngine
from server.lipsync.engine import LipSyncEngine
from server.settings import Settings

logger = logging.getLogger(__name__)


class EngineUnavailableError(RuntimeError):
    """The engine asked for cannot run here; the message says what is missing."""


@dataclass(frozen=True)
class EngineChoice:
    engine: LipSyncEngine
    reason: str


def select_engine(settings: Settings) -> EngineChoice:
    """The engine named by LIPSYNC_ENGINE; `auto` takes the best one that can run."""
    wanted = settings.lipsync_engine
    if wanted == "musetalk":
        raise EngineUnavailableError(
            "LIPSYNC_ENGINE=musetalk: the MuseTalk engine is not available in this build; "
            "use LIPSYNC_ENGINE=demo or auto."
        )
    if wanted == "demo":
        return EngineChoice(DemoEngine(), "LIPSYNC_ENGINE=demo")
    return EngineChoice(DemoEngine(), "auto: the MuseTalk engine is not available in this build")
