"""Which lip-sync engine the server runs, and why (LIPSYNC_ENGINE, LIPSYNC_DEVICE).

- `demo`: the built-in engine, always available.
- `musetalk`: MuseTalk with the weights in MODELS_DIR; a start-up error naming every
  missing or malformed file when they are not usable.
- `auto` (default): `musetalk` when its weights are complete, otherwise `demo`; the
  reason says which files were missing. On a machine without CUDA the model runs on the
  CPU, far below real time (seconds per frame): the log warns, and says how to choose
  `demo` instead.

Whether the weights are complete is checked without loading anything (file presence,
configs, checkpoint containers), so `auto` costs nothing on a machine without them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from server.lipsync.demo.engine import DemoEngine
from server.lipsync.engine import LipSyncEngine
from server.lipsync.musetalk.weights import DOWNLOAD_HINT, MuseTalkWeights, WeightsError, locate_weights
from server.settings import Settings

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

AVATAR_CACHE_SUBDIR = ".cache"
"""Under AVATARS_DIR: what engines compute for avatars (MuseTalk's latents and masks)."""


class EngineUnavailableError(RuntimeError):
    """The engine asked for cannot run here; the message says what is missing."""


@dataclass(frozen=True)
class EngineChoice:
    engine: LipSyncEngine
    reason: str


def select_engine(settings: Settings) -> EngineChoice:
    """The engine named by LIPSYNC_ENGINE; `auto` takes MuseTalk when it can run."""
    wanted = settings.lipsync_engine
    if wanted == "demo":
        return EngineChoice(DemoEngine(), "LIPSYNC_ENGINE=demo")
    weights = locate_weights(settings.models_dir, settings.musetalk_version)
    explicit = wanted == "musetalk"
    try:
        weights.require()
        device = resolve_device(settings.lipsync_device)
        if device.type == "cpu":
            logger.warning(
                "MuseTalk runs on the CPU here: full-size weights render far below real "
                "time (seconds per frame), so speech will stall. Use a CUDA GPU, or "
                "LIPSYNC_ENGINE=demo for the built-in avatar."
            )
        engine = _load_musetalk(weights, device, settings)
    except WeightsError as error:
        if explicit:
            raise EngineUnavailableError(f"LIPSYNC_ENGINE=musetalk, but {error}") from error
        reason = f"auto: MuseTalk {weights.version} cannot run ({error.summary()}); {DOWNLOAD_HINT}"
        return EngineChoice(DemoEngine(), reason)
    except EngineUnavailableError as error:
        if explicit:
            raise EngineUnavailableError(f"LIPSYNC_ENGINE=musetalk: {error}") from error
        return EngineChoice(DemoEngine(), f"auto: MuseTalk {weights.version} weights are complete, but {error}")
    described = engine.describe()
    prefix = "LIPSYNC_ENGINE=musetalk" if explicit else "auto: MuseTalk weights are complete"
    return EngineChoice(
        engine,
        f"{prefix}; MuseTalk {weights.version} from {weights.models_dir} "
        f"on {described['device']} ({described['dtype']})",
    )


def check_engine(settings: Settings) -> None:
    """Fail fast, before the server starts, when `musetalk` is asked for without its weights."""
    if settings.lipsync_engine != "musetalk":
        return
    try:
        locate_weights(settings.models_dir, settings.musetalk_version).require()
    except WeightsError as error:
        raise EngineUnavailableError(f"LIPSYNC_ENGINE=musetalk, but {error}") from error


def resolve_device(wanted: str) -> torch.device:
    """LIPSYNC_DEVICE as a torch device: empty means cuda when available, else cpu."""
    import torch

    if not wanted:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(wanted)
    except (RuntimeError, ValueError) as error:
        raise EngineUnavailableError(f"LIPSYNC_DEVICE={wanted!r} is not a torch device ({error})") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngineUnavailableError(f"LIPSYNC_DEVICE={wanted!r} names a CUDA device, and there is none")
    return device


def _load_musetalk(weights: MuseTalkWeights, device: torch.device, settings: Settings) -> LipSyncEngine:
    # Imported here: torch, diffusers and transformers take seconds to import, and a
    # server running `demo` never needs them.
    from server.lipsync.musetalk.audio import WindowRule
    from server.lipsync.musetalk.engine import load_musetalk_engine

    return load_musetalk_engine(
        weights,
        device,
        settings.avatars_dir / AVATAR_CACHE_SUBDIR / "musetalk",
        WindowRule(settings.musetalk_audio_window),
    )
