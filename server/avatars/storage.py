"""The on-disk format of a prepared avatar, written atomically, and the avatar it loads into.

One folder per avatar under AVATARS_DIR:

    <avatar_id>/
      avatar.json        metadata: format version, source video (sha256...), fps, frame
                         count, size, face boxes, mask squares, how it was prepared
      frames.mkv         the video's frames, lossless (FFV1), [N, H, W, 3] RGB once decoded
      crops.mkv          the 256 x 256 face crops the model sees, lossless
      masks.mkv          blending masks, lossless grey, each in the top-left corner of an
                         S x S picture (S: the largest mask square)
      landmarks.npy      [N, 68, 2] float32 face landmarks (NaN where none was found)
      latents/<engine>/<version>.npz
                         what an engine derives from the crops (MuseTalk: VAE latents),
                         written by the engine on first load; absent until then

A preparation writes into a hidden staging folder next to the others and renames it into
place when complete, so an avatar folder is either whole or absent. Latents are written
to a temporary file and renamed too, and carry the preparation id they were computed
from, so latents of an earlier preparation of the same name are never used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from server.lipsync.engine import Avatar

logger = logging.getLogger(__name__)

FORMAT_NAME = "avatar-server/prepared-avatar"
FORMAT_VERSION = 1
"""Bump when the files change meaning; avatars of another version are prepared again."""
METADATA_FILE = "avatar.json"
FRAMES_FILE = "frames.mkv"
CROPS_FILE = "crops.mkv"
MASKS_FILE = "masks.mkv"
LANDMARKS_FILE = "landmarks.npy"
LATENTS_DIR = "latents"
STAGING_PREFIX = ".staging-"
"""Hidden names of work in progress: preparations' folders and uploaded videos."""
UPLOAD_PREFIX = f"{STAGING_PREFIX}upload-"
TRASH_PREFIX = ".trash-"
LEFTOVER_SECONDS = 3600.0
LATENTS_KEY = "preparation_id"
# Names that become file names: no path separators, and no leading dot (hidden names are
# the staging folders'). Engine versions may also hold '+' ("1.5+sd-vae-ft-mse").
AVATAR_ID_PATTERN = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,63}$")
LATENTS_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-+]{0,63}$")
# FFV1 is lossless and fast; bgr0 is the packed RGB layout it encodes (rgb24 it cannot).
LOSSLESS_CODEC = "ffv1"
RGB_PIXEL_FORMAT = "bgr0"


class AvatarFormatError(ValueError):
    """A folder that is not a complete prepared avatar of this format version."""


def check_avatar_id(avatar_id: str) -> str:
    if not AVATAR_ID_PATTERN.match(avatar_id):
        raise ValueError(
            f"avatar id {avatar_id!r} must be 1-64 letters, digits, '_', '-' or '.', not starting with '.'"
        )
    return avatar_id


def check_latents_name(kind: str, name: str) -> str:
    if not LATENTS_NAME_PATTERN.match(name):
        raise ValueError(
            f"{kind} {name!r} must be 1-64 letters, digits, '_', '-', '.' or '+', not starting with '.'"
        )
    return name


@dataclass(frozen=True, eq=False, kw_only=True)
class PreparedAvatar(Avatar):
    """An avatar read from its folder: frames and boxes (as every avatar) plus what the
    preparation computed for a model engine. All arrays are per frame, in frame order; the
    ping-pong order of the idle loop is `cycle`, as for every avatar.
    """

    directory: Path
    preparation_id: str
    crops: np.ndarray
    """[N, 256, 256, 3] uint8 RGB: the face box of each frame, resized (Lanczos)."""
    masks: np.ndarray
    """[N, S, S] uint8: frame i's mask is `masks[i, :side, :side]`; see `blend_mask`."""
    mask_boxes: np.ndarray
    """[N, 4] int (x1, y1, x2, y2): the square each mask covers; may extend past the frame."""
    landmarks: np.ndarray
    """[N, 68, 2] float32 landmarks; NaN for frames without them (box given, or no face)."""

    def blend_mask(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(square, mask) of frame `index`: 255 where the rendered face replaces the frame."""
        box = self.mask_boxes[index]
        side = int(box[2] - box[0])
        return box, self.masks[index, :side, :side]

    def latents_path(self, engine: str, version: str) -> Path:
        check_latents_name("engine", engine)
        check_latents_name("engine version", version)
        return self.directory / LATENTS_DIR / engine / f"{version}.npz"

    def read_latents(self, engine: str, version: str) -> dict[str, np.ndarray] | None:
        """What `engine` at `version` stored for this preparation, or None (compute it)."""
        path = self.latents_path(engine, version)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            logger.warning("ignoring unreadable latents %s: %s", path, error)
            return None
        if str(arrays.pop(LATENTS_KEY, "")) != self.preparation_id:
            return None  # computed for an earlier preparation of this avatar
        return arrays

    def write_latents(self, engine: str, version: str, arrays: Mapping[str, np.ndarray]) -> Path:
        """Store `arrays` for `engine` at `version`, atomically; returns the file written."""
        if LATENTS_KEY in arrays:
            raise ValueError(f"{LATENTS_KEY!r} is reserved")
        path = self.latents_path(engine, version)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".", suffix=".npz", delete=False) as file:
            np.savez(file, **arrays, **{LATENTS_KEY: np.array(self.preparation_id)})
        os.replace(file.name, path)
        return path


def stored_latents(directory: Path) -> list[str]:
    """`engine/version` of every latents file in an avatar folder."""
    try:
        return sorted(f"{p.parent.name}/{p.stem}" for p in (directory / LATENTS_DIR).glob("*/*.npz"))
    except FileNotFoundError:  # the avatar is being replaced by a new preparation right now
        return []


# --- lossless video files ------------------------------------------------------------------


class LosslessVideoWriter:
    """Writes [H, W, 3] RGB or [H, W] grey uint8 pictures to an FFV1 .mkv, exactly."""

    def __init__(self, path: Path, width: int, height: int, fps: float, grey: bool = False) -> None:
        self._container = av.open(str(path), mode="w")
        self._stream = self._container.add_stream(LOSSLESS_CODEC, rate=Fraction(fps).limit_denominator(1001))
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "gray" if grey else RGB_PIXEL_FORMAT
        self._format = "gray" if grey else "rgb24"

    def write(self, picture: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format=self._format)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()


def read_lossless_video(path: Path, count: int, grey: bool = False) -> np.ndarray:
    """The `count` pictures of a file written by `LosslessVideoWriter`: [N, H, W, 3] or
    [N, H, W]. Raises `AvatarFormatError` when it holds another number."""
    pictures: np.ndarray | None = None
    decoded = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for decoded, frame in enumerate(container.decode(stream), start=1):
            picture = frame.to_ndarray(format="gray" if grey else "rgb24")
            if pictures is None:  # filled in place: no second copy of a large avatar
                pictures = np.empty((count, *picture.shape), np.uint8)
            if decoded > count:
                break
            pictures[decoded - 1] = picture
    if pictures is None or decoded != count:
        raise AvatarFormatError(f"{path} holds {decoded} pictures, not {count}: prepare the avatar again")
    return pictures


# --- writing -------------------------------------------------------------------------------


@dataclass
class AvatarWriter:
    """Streams a preparation's outputs into a staging folder; `commit` puts it in place."""

    avatars_dir: Path
    avatar_id: str
    width: int
    height: int
    fps: float
    mask_side: int
    crop_size: int
    staging: Path = field(init=False)
    _writers: dict[str, LosslessVideoWriter] = field(init=False)

    def __post_init__(self) -> None:
        check_avatar_id(self.avatar_id)
        self.avatars_dir.mkdir(parents=True, exist_ok=True)
        prefix = f"{STAGING_PREFIX}{self.avatar_id}-"
        self.staging = Path(tempfile.mkdtemp(prefix=prefix, dir=self.avatars_dir))
        self.staging.chmod(0o755)  # mkdtemp's 0700 would make the avatar private to this user
        folder, fps, crop, mask = self.staging, self.fps, self.crop_size, self.mask_side
        self._writers = {
            FRAMES_FILE: LosslessVideoWriter(folder / FRAMES_FILE, self.width, self.height, fps),
            CROPS_FILE: LosslessVideoWriter(folder / CROPS_FILE, crop, crop, fps),
            MASKS_FILE: LosslessVideoWriter(folder / MASKS_FILE, mask, mask, fps, grey=True),
        }

    def add(self, frame: np.ndarray, crop: np.ndarray, mask: np.ndarray) -> None:
        padded = np.zeros((self.mask_side, self.mask_side), np.uint8)
        padded[: mask.shape[0], : mask.shape[1]] = mask
        self._writers[FRAMES_FILE].write(frame)
        self._writers[CROPS_FILE].write(crop)
        self._writers[MASKS_FILE].write(padded)

    def commit(self, metadata: dict[str, Any], landmarks: np.ndarray) -> Path:
        """Finish the files and move the folder into place, replacing an older one."""
        for writer in self._writers.values():
            writer.close()
        np.save(self.staging / LANDMARKS_FILE, landmarks.astype(np.float32))
        (self.staging / METADATA_FILE).write_text(json.dumps(metadata, indent=1))
        target = self.avatars_dir / self.avatar_id
        trash = None
        if target.exists():
            trash = self.avatars_dir / f"{TRASH_PREFIX}{self.avatar_id}-{uuid.uuid4().hex[:8]}"
            target.rename(trash)
        self.staging.rename(target)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        return target

    def abort(self) -> None:
        for writer in self._writers.values():
            with contextlib.suppress(Exception):
                writer.close()
        shutil.rmtree(self.staging, ignore_errors=True)


def new_metadata(avatar_id: str, **facts: Any) -> dict[str, Any]:
    """avatar.json's content: the format's own keys, then the preparation's `facts`."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "avatar_id": avatar_id,
        "preparation_id": uuid.uuid4().hex,
        "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **facts,
    }


# --- reading -------------------------------------------------------------------------------


def read_metadata(directory: Path) -> dict[str, Any]:
    """avatar.json of a complete avatar folder of this format version."""
    try:
        metadata = json.loads((directory / METADATA_FILE).read_text())
    except (OSError, ValueError) as error:
        raise AvatarFormatError(f"{directory} has no readable {METADATA_FILE}: {error}") from None
    if metadata.get("format") != FORMAT_NAME or metadata.get("format_version") != FORMAT_VERSION:
        raise AvatarFormatError(
            f"{directory} is format {metadata.get('format')} v{metadata.get('format_version')}, "
            f"not v{FORMAT_VERSION}: prepare it again"
        )
    return metadata


def load_prepared(directory: Path) -> PreparedAvatar:
    """The avatar stored in `directory`, all in memory (slow for long videos: a thread's job)."""
    metadata = read_metadata(directory)
    count = int(metadata["frame_count"])
    frames = read_lossless_video(directory / FRAMES_FILE, count)
    crops = read_lossless_video(directory / CROPS_FILE, count)
    masks = read_lossless_video(directory / MASKS_FILE, count, grey=True)
    landmarks = np.load(directory / LANDMARKS_FILE)
    return PreparedAvatar(
        avatar_id=metadata["avatar_id"],
        frames=frames,
        face_boxes=np.array(metadata["face_boxes"], np.int64),
        fps=float(metadata["fps"]),
        metadata=metadata,
        directory=directory,
        preparation_id=metadata["preparation_id"],
        crops=crops,
        masks=masks,
        mask_boxes=np.array(metadata["mask_boxes"], np.int64),
        landmarks=landmarks,
    )


def prepared_ids(avatars_dir: Path) -> list[str]:
    """Ids of the avatar folders in `avatars_dir` (staging and trash folders are hidden)."""
    if not avatars_dir.is_dir():
        return []
    return sorted(
        p.name for p in avatars_dir.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / METADATA_FILE).is_file()
    )


def remove_prepared(avatars_dir: Path, avatar_id: str) -> None:
    """Delete an avatar folder: renamed away first, so it vanishes at once and whole."""
    target = avatars_dir / check_avatar_id(avatar_id)
    trash = avatars_dir / f"{TRASH_PREFIX}{avatar_id}-{uuid.uuid4().hex[:8]}"
    target.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def remove_leftovers(avatars_dir: Path, older_than: float = LEFTOVER_SECONDS) -> list[str]:
    """Remove staging, trash and upload leftovers of interrupted processes; their names.

    Only those untouched for `older_than` seconds: a preparation running in another
    process (the CLI) keeps writing into its staging folder.
    """
    if not avatars_dir.is_dir():
        return []
    removed = []
    now = time.time()
    for path in avatars_dir.iterdir():
        if not path.name.startswith((STAGING_PREFIX, TRASH_PREFIX)):
            continue
        members = list(path.iterdir()) if path.is_dir() else []
        touched = max(member.stat().st_mtime for member in [path, *members])
        if now - touched < older_than:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


@contextlib.contextmanager
def staged(writer: AvatarWriter) -> Iterator[AvatarWriter]:
    """`writer`, whose staging folder is removed when the block fails."""
    try:
        yield writer
    except BaseException:
        writer.abort()
        raise
