"""The built-in `demo` avatar, as a prepared avatar like any other.

The face drawn by code (`server.lipsync.demo.face`) is rendered to a video file and put
through the real preparation, so that path runs end to end on every machine. It happens
when a session first asks for `demo` and AVATARS_DIR/demo is missing or stale: prepared
from another version of the drawing, or with other tools than this machine has now (face
parsing weights added since, say). Otherwise the stored one is simply loaded: the fast
path that keeps start-up and the tests quick. It takes a second or two on a CPU.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

from server.avatars.preparation import Preparation, PreparationRequest, Preparer
from server.avatars.storage import AvatarFormatError, read_metadata
from server.avatars.video import write_video
from server.lipsync.demo.face import DEMO_AVATAR_ID, DEMO_FPS, DEMO_FRAME_COUNT, draw_face

logger = logging.getLogger(__name__)

DEMO_VERSION = 1
"""Bump when the drawing changes, so that stored demo avatars are prepared again."""


def demo_is_current(preparer: Preparer) -> bool:
    try:
        metadata = read_metadata(preparer.avatars_dir / DEMO_AVATAR_ID)
    except AvatarFormatError:
        return False
    return metadata.get("demo_version") == DEMO_VERSION and metadata.get("recipe") == preparer.recipe(None)


def prepare_demo(preparer: Preparer) -> Preparation | None:
    """Prepare the demo avatar unless a current one is stored; None when it was."""
    if demo_is_current(preparer):
        return None
    logger.info("preparing the built-in demo avatar from its drawn face (once per AVATARS_DIR)")
    # The drawing is shorter than an operator's video may be: the limit is for those.
    any_length = dataclasses.replace(preparer, limits=dataclasses.replace(preparer.limits, min_seconds=0.0))
    with tempfile.TemporaryDirectory(prefix="avatar-demo-") as folder:
        video = Path(folder) / "demo.mp4"
        write_video(video, (draw_face(i) for i in range(DEMO_FRAME_COUNT)), DEMO_FPS)
        request = PreparationRequest(
            video, DEMO_AVATAR_ID, force=True, source_name="built-in drawn face",
            extra_metadata={"built_in": True, "demo_version": DEMO_VERSION},
        )
        return any_length.prepare(request)
