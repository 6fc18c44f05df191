"""The MuseTalk version an avatar is prepared for, and what differs between versions.

MuseTalk 1.0 and 1.5 prepare an avatar's frames differently (`scripts/realtime_inference.py`
and `musetalk/utils/preprocessing.py`, `musetalk/utils/face_parsing`):

| | 1.5 | 1.0 |
|---|---|---|
| chin margin (`extra_margin`) | 10 px below the face box | none |
| face parsing mode | `jaw` (skin grown over the jaw line, lips, not the nose) | `raw` (skin and lips as parsed) |
| `bbox_shift` | always 0 | moves the box's vertical centre (nose ridge) down (+) or up (-) by that many pixels |

Each model was trained on crops of its own recipe, so an avatar is prepared for one
version and the engine serves it with that version only (avatar.json's `recipe` records
which); serving it with the other one means preparing it again for that version.
"""

from __future__ import annotations

from dataclasses import dataclass

VERSIONS = ("1.5", "1.0")
DEFAULT_VERSION = "1.5"
"""What avatars prepared before the version was recorded were prepared for."""
JAW_MODE = "jaw"
RAW_MODE = "raw"
EXTRA_MARGINS = {"1.5": 10, "1.0": 0}
PARSING_MODES = {"1.5": JAW_MODE, "1.0": RAW_MODE}
BBOX_SHIFT_LIMIT = 200
"""Largest |bbox_shift| accepted, in pixels (MuseTalk's useful range is a few tens)."""


@dataclass(frozen=True)
class MuseTalkRecipe:
    """How one avatar's boxes and masks are made for one MuseTalk version."""

    version: str = DEFAULT_VERSION
    bbox_shift: int = 0
    """Pixels the box's vertical centre moves down (negative: up); MuseTalk 1.0 only."""

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise ValueError(f"the MuseTalk version must be one of {', '.join(VERSIONS)} (got {self.version!r})")
        if self.bbox_shift and self.version != "1.0":
            raise ValueError(
                f"bbox_shift applies to MuseTalk 1.0 only (MuseTalk {self.version} always uses 0); "
                "leave it out, or prepare for version 1.0"
            )
        if abs(self.bbox_shift) > BBOX_SHIFT_LIMIT:
            raise ValueError(f"bbox_shift must be between -{BBOX_SHIFT_LIMIT} and {BBOX_SHIFT_LIMIT} pixels")

    @property
    def extra_margin(self) -> int:
        """Pixels added below the chin."""
        return EXTRA_MARGINS[self.version]

    @property
    def parsing_mode(self) -> str:
        return PARSING_MODES[self.version]


def recipe_version(metadata: dict) -> str:
    """The MuseTalk version a stored avatar (its avatar.json) was prepared for."""
    return str(metadata.get("recipe", {}).get("musetalk_version", DEFAULT_VERSION))
