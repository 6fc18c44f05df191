"""68 face landmarks per frame (iBUG-300W order), from DWPose or from mediapipe.

- Faces are found with mediapipe's full-range face detector, whose weights ship inside the
  `mediapipe` wheel. It plays the part of MuseTalk's S3FD: it says whether a frame shows a
  face, and which face when it shows several (the largest).
- Landmarks come from DWPose (`models/dwpose/dw-ll_ucoco_384.onnx`, run by onnxruntime)
  when that file is there, and otherwise from mediapipe's face mesh, whose 468 points are
  mapped onto the 68 (table below; /work/notes/face_landmarks.md measured it against dlib).
  DWPose sees the whole frame, as in MuseTalk; in a frame with several faces its single
  person estimate could belong to anyone, so there the mesh of the chosen face is used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from server.avatars.errors import LandmarksUnavailableError, WeightsUnusableError
from server.avatars.face_box import LANDMARK_COUNT

logger = logging.getLogger(__name__)

# Where an avatar's landmarks came from, as its metadata says.
DWPOSE_SOURCE = "dwpose"
MESH_SOURCE = "mediapipe-face-mesh"

DWPOSE_DIR = "dwpose"
DWPOSE_MODEL = "dw-ll_ucoco_384.onnx"
DWPOSE_INPUT_SIZE = (288, 384)  # (w, h) of the RTMPose-l input
# The person box is enlarged by this factor before the affine warp (mmpose's padding).
DWPOSE_BOX_PADDING = 1.25
DWPOSE_MEAN = np.array([123.675, 116.28, 103.53], np.float32)  # RGB, as mmpose's config
DWPOSE_STD = np.array([58.395, 57.12, 57.375], np.float32)
SIMCC_SPLIT_RATIO = 2.0
"""SimCC bins per input pixel."""
FACE_KEYPOINTS = slice(23, 23 + LANDMARK_COUNT)
"""COCO-WholeBody keypoints 23..90 are the 68 face landmarks."""

MIN_DETECTION_CONFIDENCE = 0.5
FULL_RANGE_MODEL = 1
"""mediapipe's full-range detector: finds faces down to ~8% of the frame."""
MESH_CROP_SCALE = 2.0
"""The face mesh runs on a square this many times the detected face, around it."""

# mediapipe face-mesh vertex (or mean of two) for each of the 68 iBUG points.
MESH_TO_68 = (
    (127,), (227,), (177,), (215,), (172,), (136,), (149,), (148,), (152,), (377,), (378,),
    (365,), (397,), (435,), (401,), (447,), (356,),
    (70,), (63,), (105,), (66,), (55,), (285,), (296,), (334,), (293,), (300,),
    (168,), (197,), (195, 5), (4,), (75,), (97,), (2,), (326,), (305,),
    (7,), (159,), (158,), (155,), (153,), (144,), (382,), (385,), (386,), (249,), (373,), (380,),
    (61,), (39,), (37,), (11,), (267,), (269,), (291,), (321,), (314,), (17,), (84,), (91,),
    (78,), (38,), (12,), (268,), (308,), (317,), (14,), (87,),
)
_MESH_PAIRS = np.array([pair if len(pair) == 2 else pair * 2 for pair in MESH_TO_68])

INSTALL_HINT = (
    "install the mediapipe version pinned in pyproject.toml ([tool.avatar-server]) without its "
    "dependencies, as scripts/setup.sh does, or give the face box (--bbox, or the form field bbox)"
)


@dataclass(frozen=True)
class FaceDetection:
    box: tuple[float, float, float, float]
    """x1, y1, x2, y2 in pixels, within the frame."""
    score: float

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


@dataclass(frozen=True)
class FrameFaces:
    """What one frame shows: how many faces, and the chosen one's landmarks."""

    faces: int
    landmarks: np.ndarray | None
    """[68, 2] float32 (x, y) pixels of the chosen face; None when no face was found."""
    detection: FaceDetection | None
    """The chosen face's detector box (the fallback when its landmark box is degenerate)."""


# --- DWPose --------------------------------------------------------------------------------


def dwpose_model_path(models_dir: Path) -> Path:
    return models_dir / DWPOSE_DIR / DWPOSE_MODEL


def pose_affine(width: int, height: int, input_size: tuple[int, int] = DWPOSE_INPUT_SIZE) -> np.ndarray:
    """The 2x3 warp of a whole frame onto the pose input, as mmpose's top-down affine.

    The box is the whole frame (MuseTalk passes no person box), padded by 1.25 and widened
    or heightened to the input's 3:4 aspect, so the scale is the same along both axes.
    """
    in_w, in_h = input_size
    scale_w, scale_h = width * DWPOSE_BOX_PADDING, height * DWPOSE_BOX_PADDING
    if scale_w > scale_h * in_w / in_h:
        scale_h = scale_w * in_h / in_w
    else:
        scale_w = scale_h * in_w / in_h
    s = in_w / scale_w
    return np.array([[s, 0.0, in_w / 2 - s * width / 2], [0.0, s, in_h / 2 - s * height / 2]])


def decode_simcc(
    simcc_x: np.ndarray, simcc_y: np.ndarray, affine: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints [K, 2] in frame pixels and scores [K] from SimCC vectors [K, Wx], [K, Wy].

    Each axis' most likely bin, over the split ratio, is a coordinate of the pose input;
    the inverse of `affine` takes it to the frame. A keypoint's score is the lower of its
    two maxima (mmpose `get_simcc_maximum`).
    """
    x_in = simcc_x.argmax(axis=1) / SIMCC_SPLIT_RATIO
    y_in = simcc_y.argmax(axis=1) / SIMCC_SPLIT_RATIO
    scores = np.minimum(simcc_x.max(axis=1), simcc_y.max(axis=1))
    s, tx, ty = affine[0, 0], affine[0, 2], affine[1, 2]
    points = np.stack([(x_in - tx) / s, (y_in - ty) / s], axis=1).astype(np.float32)
    return points, scores


class DWPoseLandmarks:
    """DWPose-l (RTMPose, COCO-WholeBody) through onnxruntime; face points only."""

    def __init__(self, path: Path) -> None:
        """Raises `ValueError` when `path` is not a usable ONNX model."""
        import onnxruntime

        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in onnxruntime.get_available_providers()]
        try:
            self._session = onnxruntime.InferenceSession(str(path), providers=providers)
            self._input = self._session.get_inputs()[0].name
            in_h, in_w = self._session.get_inputs()[0].shape[2:]
            self.input_size = (int(in_w), int(in_h))
        except Exception as error:  # onnxruntime's own error types, or an unexpected input
            raise ValueError(f"{path} is not a usable DWPose ONNX model ({error})") from None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """[68, 2] float32 landmarks of the person in the RGB frame."""
        height, width = frame.shape[:2]
        affine = pose_affine(width, height, self.input_size)
        warped = cv2.warpAffine(frame, affine, self.input_size, flags=cv2.INTER_LINEAR)
        x = ((warped.astype(np.float32) - DWPOSE_MEAN) / DWPOSE_STD).transpose(2, 0, 1)[None]
        simcc_x, simcc_y = self._session.run(None, {self._input: x})[:2]  # [1, 133, 2w], [1, 133, 2h]
        points, _ = decode_simcc(simcc_x[0], simcc_y[0], affine)
        return points[FACE_KEYPOINTS]


# --- mediapipe -----------------------------------------------------------------------------


def _import_mediapipe() -> Any:
    # mediapipe's C++ logging, and a deprecation warning its protobuf use raises on every
    # frame, would flood the log.
    os.environ.setdefault("GLOG_minloglevel", "2")
    warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)
    try:
        import mediapipe
    except ImportError as error:
        raise LandmarksUnavailableError(
            f"No face detector: mediapipe is not installed ({error}); {INSTALL_HINT}."
        ) from None
    if not hasattr(mediapipe, "solutions"):
        raise LandmarksUnavailableError(
            f"No face detector: mediapipe {getattr(mediapipe, '__version__', '?')} has no "
            f"`solutions` API (newer versions ship no face models); {INSTALL_HINT}."
        )
    return mediapipe


class MediaPipeFaces:
    """mediapipe's face detector and face mesh (weights inside the wheel, CPU)."""

    def __init__(self) -> None:
        mediapipe = _import_mediapipe()
        solutions = mediapipe.solutions
        self._detector = solutions.face_detection.FaceDetection(
            model_selection=FULL_RANGE_MODEL, min_detection_confidence=MIN_DETECTION_CONFIDENCE
        )
        self._mesh = solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, min_detection_confidence=MIN_DETECTION_CONFIDENCE
        )

    def detect(self, frame: np.ndarray) -> list[FaceDetection]:
        """Faces in the RGB frame, largest first."""
        height, width = frame.shape[:2]
        found = []
        for detection in self._detector.process(frame).detections or []:
            rel = detection.location_data.relative_bounding_box
            x1, y1 = max(rel.xmin * width, 0.0), max(rel.ymin * height, 0.0)
            x2 = min((rel.xmin + rel.width) * width, float(width))
            y2 = min((rel.ymin + rel.height) * height, float(height))
            if x2 > x1 and y2 > y1:
                found.append(FaceDetection((x1, y1, x2, y2), float(detection.score[0])))
        return sorted(found, key=lambda face: face.area, reverse=True)

    def landmarks(self, frame: np.ndarray, face: FaceDetection | None) -> np.ndarray | None:
        """[68, 2] landmarks of `face` (None: of the face filling the frame), or None.

        The mesh's own detector only finds faces that fill a good part of its image, so
        it runs on a square around the detected face.
        """
        height, width = frame.shape[:2]
        x0, y0, x1, y1 = 0, 0, width, height
        if face is not None:
            bx1, by1, bx2, by2 = face.box
            cx, cy = (bx1 + bx2) / 2, (by1 + by2) / 2
            half = max(bx2 - bx1, by2 - by1) * MESH_CROP_SCALE / 2
            x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
            x1, y1 = int(min(width, cx + half)), int(min(height, cy + half))
        crop = np.ascontiguousarray(frame[y0:y1, x0:x1])
        result = self._mesh.process(crop).multi_face_landmarks
        if not result:
            return None
        mesh = np.array([(p.x, p.y) for p in result[0].landmark], np.float32)
        mesh = mesh * (x1 - x0, y1 - y0) + (x0, y0)
        return mesh[_MESH_PAIRS].mean(axis=1)

    def close(self) -> None:
        self._detector.close()
        self._mesh.close()


# --- both together -------------------------------------------------------------------------


class FaceLandmarker:
    """Finds the face in each frame and its 68 landmarks."""

    def __init__(self, faces: MediaPipeFaces, dwpose: DWPoseLandmarks | None) -> None:
        self._faces = faces
        self._dwpose = dwpose

    def __call__(self, frame: np.ndarray) -> FrameFaces:
        detections = self._faces.detect(frame)
        if not detections:
            # A face filling most of the frame can escape the detector, not the mesh.
            landmarks = self._faces.landmarks(frame, None)
            return FrameFaces(0 if landmarks is None else 1, landmarks, None)
        chosen = detections[0]
        landmarks = None
        if self._dwpose is not None and len(detections) == 1:
            landmarks = self._dwpose(frame)
            if not _inside(landmarks.mean(axis=0), chosen.box):
                landmarks = None  # the pose belongs to someone else, or is lost
        if landmarks is None:
            landmarks = self._faces.landmarks(frame, chosen)
        return FrameFaces(len(detections), landmarks, chosen)

    def close(self) -> None:
        self._faces.close()


def _inside(point: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


@contextlib.contextmanager
def open_landmarker(models_dir: Path) -> Iterator[FaceLandmarker]:
    """The landmarker for this machine: DWPose when its weights are there, else the mesh.

    Raises `LandmarksUnavailableError` when mediapipe (the face detector) is missing, and
    `WeightsUnusableError` when the DWPose file is there but broken.
    """
    faces = MediaPipeFaces()
    path = dwpose_model_path(models_dir)
    try:
        dwpose = DWPoseLandmarks(path) if path.is_file() else None
    except ValueError as error:
        faces.close()
        raise WeightsUnusableError(
            f"{error}. Replace it (scripts/download_models.sh) or remove it to use mediapipe's face mesh."
        ) from None
    landmarker = FaceLandmarker(faces, dwpose)
    try:
        yield landmarker
    finally:
        landmarker.close()
