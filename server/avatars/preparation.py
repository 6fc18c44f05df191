"""From a video of a person to a prepared avatar, as MuseTalk's real-time preparation.

An avatar is prepared for one MuseTalk version (1.5 by default, or the one the server's
weights run), with that version's recipe (`recipe`): its chin margin, parsing mode and,
for 1.0, `bbox_shift`.

Two passes over the video, so that no more than one frame is held at a time however long
the video is:
1. faces: each frame's face (the largest, when several) and its 68 landmarks; then each
   frame's face box by MuseTalk's recipe (`face_box`). Frames without a face borrow the
   box of the nearest frame with one, up to AVATAR_MAX_FACELESS_SHARE of the frames.
2. pictures: each frame, its 256 x 256 face crop and its blending mask (`masks`), written
   losslessly into a staging folder that is renamed into place at the end (`storage`).

The VAE latents of the crops belong to the model engine and are not computed here: the
CLI and the upload jobs have the engine encode them right after (when its weights are
there), or the engine does on the avatar's first load; either way they are stored next to
the rest (`PreparedAvatar.write_latents`).
The ping-pong cycle is not stored either: it is the frame order every avatar's `cycle` gives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from server.avatars import face_box, masks
from server.avatars.errors import AvatarError, AvatarExistsError, VideoError, WeightsUnusableError
from server.avatars.face_box import Box, clamp_box, crop_face, landmark_box, with_margin
from server.avatars.face_parsing import face_parsing_weights, open_face_parser
from server.avatars.landmarks import (
    DWPOSE_SOURCE,
    MESH_SOURCE,
    DWPoseLandmarks,
    FrameFaces,
    dwpose_model_path,
    open_landmarker,
)
from server.avatars.recipe import DEFAULT_VERSION, MuseTalkRecipe
from server.avatars.storage import AvatarFormatError, AvatarWriter, new_metadata, read_metadata, staged
from server.avatars.video import VideoInfo, VideoLimits, probe_video, read_frames
from server.settings import Settings

if TYPE_CHECKING:
    from server.isolation.pool import DecodePool

logger = logging.getLogger(__name__)

Progress = Callable[[float], None]
"""Called with the share of the work done, 0 to 1, from the preparing thread."""

# Share of the progress bar each pass takes (the second one parses faces: the slow one).
FACES_SHARE = 0.4
PICTURES_SHARE = 0.58
HASH_BLOCK_BYTES = 1024 * 1024
# OpenCV's thread pool and torch's OpenMP threads fight over the cores: on 2 cores the face
# parsing pass ran 3 to 6 times slower with both. OpenCV's work here is on pictures too
# small to gain from threads, so it gets one (for the whole process: OpenCV has no other).
OPENCV_THREADS = 1
# Frames listed by number in a message before the rest is summed up.
LISTED_RANGES = 12


@dataclass(frozen=True)
class PreparationRequest:
    video: Path
    avatar_id: str
    bbox: Box | None = None
    """A face box for every frame (x1, y1, x2, y2, final: no margin is added); no landmarks."""
    force: bool = False
    """Prepare even when the avatar exists (from this video or another)."""
    source_name: str | None = None
    """The video's name as the user knows it (an upload's file name), for the metadata."""
    sha256: str | None = None
    """The video's sha256, when the caller hashed it already (while receiving an upload)."""
    extra_metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    musetalk_version: str | None = None
    """The MuseTalk version to prepare for; None: the preparer's (the server's)."""
    bbox_shift: int | None = None
    """MuseTalk 1.0's bbox_shift; None: the preparer's default (MUSETALK_BBOX_SHIFT) for 1.0."""


@dataclass(frozen=True)
class Preparation:
    avatar_id: str
    directory: Path
    reused: bool
    """True when the avatar was already prepared from this video the same way: no work."""
    frame_count: int
    fps: float
    seconds: float
    """Wall time the preparation took."""
    warnings: tuple[str, ...] = ()


def check_preparation_weights(models_dir: Path) -> list[tuple[bool, str]]:
    """(usable, sentence) for each optional preparation weight file in `models_dir`."""
    report = []
    parsing = face_parsing_weights(models_dir)
    if not parsing.is_file():
        report.append((True, f"face parsing: no {parsing} (feathered masks are used instead)"))
    else:
        try:
            open_face_parser(models_dir, "cpu")
            report.append((True, f"face parsing: {parsing} loads"))
        except ValueError as error:
            report.append((False, f"face parsing: {parsing} is unusable ({error})"))
    pose = dwpose_model_path(models_dir)
    if not pose.is_file():
        report.append((True, f"landmarks: no {pose} (mediapipe's face mesh is used instead)"))
    else:
        try:
            DWPoseLandmarks(pose)
            report.append((True, f"landmarks: {pose} loads"))
        except ValueError as error:
            report.append((False, f"landmarks: {pose} is unusable ({error})"))
    return report


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def default_device(configured: str) -> str:
    """LIPSYNC_DEVICE, or cuda when available, else cpu."""
    if configured:
        return configured
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class Preparer:
    """Prepares avatars into `avatars_dir` with the weights found in `models_dir`."""

    avatars_dir: Path
    models_dir: Path
    limits: VideoLimits
    max_faceless_share: float
    device: str = ""
    musetalk_version: str = DEFAULT_VERSION
    """The version avatars are prepared for unless a request names one."""
    bbox_shift: int = 0
    """bbox_shift of 1.0 preparations unless a request gives one."""
    decoders: DecodePool | None = dataclasses.field(default=None, compare=False)
    """Worker processes that decode the videos (uploads are untrusted); None: in-process."""

    @classmethod
    def from_settings(cls, settings: Settings, decoders: DecodePool | None = None) -> Preparer:
        from server.lipsync.musetalk.weights import locate_weights

        return cls(
            settings.avatars_dir,
            settings.models_dir,
            VideoLimits.from_settings(settings),
            settings.avatar_max_faceless_share,
            settings.lipsync_device,
            # The version the MuseTalk engine runs with these settings and weights.
            locate_weights(settings.models_dir, settings.musetalk_version).version,
            settings.musetalk_bbox_shift,
            decoders,
        )

    def musetalk_recipe(
        self, bbox: Box | None = None, version: str | None = None, bbox_shift: int | None = None
    ) -> MuseTalkRecipe:
        """The MuseTalk recipe of a preparation (the preparer's defaults for what is None).

        Raises `AvatarError` (422) for a version or bbox_shift that does not fit.
        """
        version = version or self.musetalk_version
        if bbox_shift and bbox is not None:
            raise AvatarError(
                "bbox_shift moves the box found from the face's landmarks; with a given face box "
                "(bbox) there are none: leave one of the two out.",
                422,
            )
        if bbox_shift is None:  # the default applies where it can: 1.0, from landmarks
            bbox_shift = self.bbox_shift if version == "1.0" and bbox is None else 0
        try:
            return MuseTalkRecipe(version, bbox_shift)
        except ValueError as error:
            raise AvatarError(f"Cannot prepare the avatar: {error}.", 422) from None

    def recipe(self, bbox: Box | None, musetalk: MuseTalkRecipe | None = None) -> dict[str, Any]:
        """How an avatar would be prepared here now; the same video and recipe make a no-op."""
        musetalk = musetalk or self.musetalk_recipe(bbox)
        weights = face_parsing_weights(self.models_dir)
        if bbox is not None:
            landmarks = "bbox"
        else:
            landmarks = DWPOSE_SOURCE if dwpose_model_path(self.models_dir).is_file() else MESH_SOURCE
        return {
            "landmarks": landmarks,
            "bbox": list(bbox) if bbox is not None else None,
            "face_parsing": f"bisenet:{file_sha256(weights)[:16]}" if weights.is_file() else "feathered",
            "musetalk_version": musetalk.version,
            "bbox_shift": musetalk.bbox_shift,
            "parsing_mode": musetalk.parsing_mode,
            "extra_margin": musetalk.extra_margin,
            "crop_size": face_box.CROP_SIZE,
            "mask_expand": masks.EXPAND,
            "mask_upper_boundary_ratio": masks.UPPER_BOUNDARY_RATIO,
            "mask_blur_ratio": masks.BLUR_RATIO,
            "cheek_width": masks.CHEEK_WIDTH,
        }

    def check_replaceable(self, avatar_id: str, sha256: str, force: bool) -> dict[str, Any] | None:
        """The existing avatar's metadata (None if absent); refuses one from another video.

        Raises `AvatarExistsError` (409) unless `force`.
        """
        try:
            existing = read_metadata(self.avatars_dir / avatar_id)
        except AvatarFormatError:
            return None  # absent, or of an older format: prepared anew
        if existing["source"]["sha256"] != sha256 and not force:
            raise AvatarExistsError(
                f"Avatar {avatar_id!r} exists already, prepared from another video "
                f"({existing['source'].get('name') or 'unnamed'}). Delete it first, choose another "
                "id, or prepare with force (--force, or the form field force=true) to replace it."
            )
        return existing

    def prepare(self, request: PreparationRequest, progress: Progress | None = None) -> Preparation:
        """Prepare `request.video` as avatar `request.avatar_id`; blocking, CPU/GPU heavy.

        Raises `VideoError` (the video cannot become an avatar), `AvatarExistsError`, and
        `LandmarksUnavailableError` (no face detector installed and no `bbox`).
        """
        started = time.monotonic()
        cv2.setNumThreads(OPENCV_THREADS)
        report = progress or (lambda share: None)
        musetalk = self.musetalk_recipe(request.bbox, request.musetalk_version, request.bbox_shift)
        sha256 = request.sha256 or file_sha256(request.video)
        existing = self.check_replaceable(request.avatar_id, sha256, request.force)
        info = probe_video(request.video, self.limits, self.decoders)
        recipe = self.recipe(request.bbox, musetalk)
        if existing is not None and not request.force and existing["recipe"] == recipe:
            logger.info("avatar %s is already prepared from this video: nothing to do", request.avatar_id)
            report(1.0)
            return Preparation(
                request.avatar_id, self.avatars_dir / request.avatar_id, True,
                existing["frame_count"], existing["fps"], time.monotonic() - started,
                tuple(existing.get("warnings", ())),
            )
        logger.info(
            "preparing avatar %s from %s (%dx%d, %.1f s at %.2f fps) for MuseTalk %s (bbox_shift %d): "
            "landmarks from %s, masks from %s",
            request.avatar_id, request.source_name or request.video.name, info.width, info.height,
            info.duration, info.fps, musetalk.version, musetalk.bbox_shift, recipe["landmarks"],
            recipe["face_parsing"],
        )
        if recipe["face_parsing"] == "feathered":
            logger.warning(
                "face-parsing weights not found at %s: the blending masks are feathered ellipses over "
                "the lower face instead of MuseTalk's face parsing",
                face_parsing_weights(self.models_dir),
            )

        boxes, landmarks, warnings = self._face_boxes(request, info, report, musetalk)
        directory = self._write(request, info, boxes, landmarks, report, musetalk, {
            "source": {
                "name": request.source_name or request.video.name,
                "sha256": sha256,
                "bytes": request.video.stat().st_size,
                "container": info.container,
                "codec": info.codec,
                "duration_seconds": round(info.duration, 3),
            },
            "recipe": recipe,
            "warnings": list(warnings),
            **request.extra_metadata,
        })
        seconds = time.monotonic() - started
        logger.info(
            "avatar %s prepared in %.1f s (%.2f s per second of video)",
            request.avatar_id, seconds, seconds / max(len(boxes) / info.fps, 1e-9),
        )
        report(1.0)
        return Preparation(request.avatar_id, directory, False, len(boxes), info.fps, seconds, warnings)

    # --- pass 1 ---------------------------------------------------------------------------

    def _face_boxes(
        self, request: PreparationRequest, info: VideoInfo, report: Progress, musetalk: MuseTalkRecipe
    ) -> tuple[list[Box], np.ndarray, tuple[str, ...]]:
        """Every frame's face box, landmarks ([N, 68, 2], NaN where none) and warnings."""
        expected = info.frame_count
        max_frames = self.limits.max_frames(info.fps)
        if request.bbox is not None:
            box = given_box(request.bbox, info.width, info.height)
            count = 0
            for count, _ in enumerate(read_frames(request.video, max_frames, self.decoders), start=1):
                report(FACES_SHARE * min(count / expected, 1.0))
            return [box] * count, np.full((count, face_box.LANDMARK_COUNT, 2), np.nan, np.float32), ()

        found: list[FrameFaces] = []
        with open_landmarker(self.models_dir) as landmarker:
            for frame in read_frames(request.video, max_frames, self.decoders):
                found.append(landmarker(frame))
                report(FACES_SHARE * min(len(found) / expected, 1.0))
        boxes = [frame_box(faces, info.width, info.height, musetalk) for faces in found]
        faceless = [i for i, box in enumerate(boxes) if box is None]
        warnings = []
        if len(faceless) > self.max_faceless_share * len(boxes):
            raise VideoError(
                422,
                f"No face was found in {len(faceless)} of the video's {len(boxes)} frames "
                f"({100 * len(faceless) / len(boxes):.0f}%; at most {100 * self.max_faceless_share:g}% "
                f"may lack one, AVATAR_MAX_FACELESS_SHARE): frames {frame_ranges(faceless)}. "
                "Use a video where the face is visible and turned to the camera throughout, "
                "or give the face box (--bbox, or the form field bbox).",
            )
        if faceless:
            warnings.append(
                f"No face was found in frames {frame_ranges(faceless)} ({len(faceless)} of {len(boxes)}); "
                "they use the face box of the nearest frame with a face."
            )
        crowded = [i for i, faces in enumerate(found) if faces.faces > 1]
        if crowded:
            warnings.append(
                f"Frames {frame_ranges(crowded)} ({len(crowded)} of {len(boxes)}) show more than one "
                "face; the largest face in each was used."
            )
        for warning in warnings:
            logger.warning("avatar %s: %s", request.avatar_id, warning)
        landmarks = np.stack([
            faces.landmarks if faces.landmarks is not None and box is not None
            else np.full((face_box.LANDMARK_COUNT, 2), np.nan, np.float32)
            for faces, box in zip(found, boxes)
        ])
        return fill_missing(boxes), landmarks, tuple(warnings)

    # --- pass 2 ---------------------------------------------------------------------------

    def _write(
        self,
        request: PreparationRequest,
        info: VideoInfo,
        boxes: list[Box],
        landmarks: np.ndarray,
        report: Progress,
        musetalk: MuseTalkRecipe,
        facts: dict[str, Any],
    ) -> Path:
        squares = [masks.mask_box(box) for box in boxes]
        side = max(square[2] - square[0] for square in squares)
        try:
            parser = open_face_parser(self.models_dir, default_device(self.device))
        except ValueError as error:
            raise WeightsUnusableError(
                f"{error}. Replace it (scripts/download_models.sh) or remove it to use feathered masks."
            ) from None
        writer = AvatarWriter(
            self.avatars_dir, request.avatar_id, info.width, info.height, info.fps, side, face_box.CROP_SIZE
        )
        with staged(writer):
            count = 0
            for count, frame in enumerate(read_frames(request.video, len(boxes), self.decoders), start=1):
                box = boxes[count - 1]
                mask, _ = masks.blend_mask(frame, box, parser, musetalk.parsing_mode)
                writer.add(frame, crop_face(frame, box), mask)
                report(FACES_SHARE + PICTURES_SHARE * count / len(boxes))
            if count != len(boxes):
                raise VideoError(400, f"The video gave {count} frames on a second reading, not {len(boxes)}.")
            height, width = info.height, info.width
            metadata = new_metadata(
                request.avatar_id,
                fps=info.fps,
                frame_count=len(boxes),
                width=width,
                height=height,
                face_boxes=[list(box) for box in boxes],
                mask_boxes=[list(square) for square in squares],
                mask_side=side,
                **facts,
            )
            return writer.commit(metadata, landmarks)


def frame_box(
    faces: FrameFaces, width: int, height: int, musetalk: MuseTalkRecipe = MuseTalkRecipe()
) -> Box | None:
    """A frame's face box from its landmarks (the detector's box when they give none)."""
    box = landmark_box(faces.landmarks, musetalk.bbox_shift) if faces.landmarks is not None else None
    if box is None and faces.detection is not None:
        box = tuple(int(v) for v in faces.detection.box)  # type: ignore[assignment]
    if box is None:
        return None
    x1, y1, x2, y2 = clamp_box(with_margin(box, height, musetalk.extra_margin), width, height)
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def given_box(bbox: Box, width: int, height: int) -> Box:
    """An operator's box, checked against the frame size."""
    x1, y1, x2, y2 = bbox
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise VideoError(
            422,
            f"The face box {x1},{y1},{x2},{y2} does not fit in the {width}x{height} frames; "
            "give x1,y1,x2,y2 with 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height.",
        )
    return bbox


def fill_missing(boxes: Sequence[Box | None]) -> list[Box]:
    """Each missing box replaced by the nearest frame's (the earlier one on a tie)."""
    known = [i for i, box in enumerate(boxes) if box is not None]
    if not known:
        raise VideoError(422, "No face was found in any frame of the video.")
    filled = []
    for i, box in enumerate(boxes):
        if box is None:
            box = boxes[min(known, key=lambda k: (abs(k - i), k))]
        filled.append(box)
    return filled  # type: ignore[return-value]


def frame_ranges(indices: Sequence[int]) -> str:
    """'0-12, 40, 41-43', the first ranges only when there are many."""
    ranges: list[list[int]] = []
    for i in indices:
        if ranges and i == ranges[-1][1] + 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    text = ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in ranges[:LISTED_RANGES])
    if len(ranges) > LISTED_RANGES:
        text += f" and {sum(b - a + 1 for a, b in ranges[LISTED_RANGES:])} more"
    return text

