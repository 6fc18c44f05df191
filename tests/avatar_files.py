"""Videos of the built-in drawn face, and tiny random weights in MuseTalk's file layout."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

from server.avatars.face_parsing import FACE_PARSING_DIR, FACE_PARSING_WEIGHTS, BiSeNet
from server.avatars.landmarks import DWPOSE_DIR, DWPOSE_MODEL
from server.avatars.video import write_video
from server.lipsync.demo.face import DEMO_FPS, DEMO_SIZE, draw_face
from tests.audio_files import encode, speech_like

TINY_BISENET_WIDTH = 8
"""Channels of the first ResNet stage (64 in the real weights): every layer, 8x thinner."""
BACKGROUND = 70


def face_frames(count: int, size: int = DEMO_SIZE) -> list[np.ndarray]:
    """The drawn face's idle frames (it sways and blinks), `size` pixels square."""
    frames = [draw_face(i) for i in range(count)]
    if size != DEMO_SIZE:
        frames = [cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames]
    return frames


def face_video(path: Path, seconds: float, size: int = DEMO_SIZE, fps: float = DEMO_FPS) -> Path:
    write_video(path, face_frames(round(seconds * fps), size), fps)
    return path


def faceless_video(path: Path, seconds: float, faces_in: range = range(0), size: int = 256) -> Path:
    """Grey frames, with the drawn face only in frames `faces_in`."""
    count = round(seconds * DEMO_FPS)
    face = face_frames(1, size)[0]
    blank = np.full((size, size, 3), BACKGROUND, np.uint8)
    write_video(path, [face if i in faces_in else blank for i in range(count)], DEMO_FPS)
    return path


def two_faces_video(path: Path, seconds: float) -> Path:
    """A large face on the left and a smaller one on the right, in every frame."""
    frames = []
    for i in range(round(seconds * DEMO_FPS)):
        canvas = np.full((360, 640, 3), BACKGROUND, np.uint8)
        canvas[20:340, 20:340] = cv2.resize(draw_face(i), (320, 320), interpolation=cv2.INTER_AREA)
        canvas[100:300, 400:600] = cv2.resize(draw_face(i + 7), (200, 200), interpolation=cv2.INTER_AREA)
        frames.append(canvas)
    write_video(path, frames, DEMO_FPS)
    return path


def audio_only_file(path: Path) -> Path:
    path.write_bytes(encode(speech_like(1.0), "m4a"))
    return path


def tiny_face_parsing_weights(models_dir: Path, seed: int = 0) -> Path:
    """Random BiSeNet weights, 8x thinner, at models/face-parse-bisent/79999_iter.pth."""
    torch.manual_seed(seed)
    path = models_dir / FACE_PARSING_DIR / FACE_PARSING_WEIGHTS
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(BiSeNet(TINY_BISENET_WIDTH).state_dict(), path)
    return path


class ConstantPose(torch.nn.Module):
    """A stand-in for DWPose with its input and outputs: SimCC vectors that peak at fixed
    bins, whatever the image (which only feeds a zero-weighted term, to stay an input)."""

    def __init__(self, x_bins: np.ndarray, y_bins: np.ndarray) -> None:
        super().__init__()
        keypoints = 133
        simcc_x = torch.zeros(keypoints, 576)
        simcc_y = torch.zeros(keypoints, 768)
        simcc_x[torch.arange(keypoints), torch.as_tensor(x_bins)] = 1.0
        simcc_y[torch.arange(keypoints), torch.as_tensor(y_bins)] = 1.0
        self.simcc_x = torch.nn.Parameter(simcc_x)
        self.simcc_y = torch.nn.Parameter(simcc_y)
        self.conv = torch.nn.Conv2d(3, 1, 3, stride=16)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zero = self.conv(image).mean() * 0.0
        return self.simcc_x[None] + zero, self.simcc_y[None] + zero  # [1, 133, 576], [1, 133, 768]


# The face the DWPose stand-in "sees" in a 512 x 512 frame: a jaw line around (257.1,
# 247.1), 130 px to each side and 160 px down; the other points inside it. In that frame
# the pose input (288 x 384) maps a frame pixel x to 0.45 x + 28.8 and y to 0.45 y + 76.8
# (the frame, padded by 1.25 to 640 x 640, widened to 3:4: 640 x 853.3, scale 288 / 640),
# and SimCC has 2 bins per input pixel: bin = 0.9 x + 57.6, 0.9 y + 153.6, rounded. So
# the jaw ends 127.1 and 387.1 fall in bins 172 and 406, which decode back to 127.11 and
# 387.11; the chin 407.1 in bin 520 (407.11); the nose ridge 247.1 in bin 376 (247.11).
# Truncated, as MuseTalk does: x 127..387, chin 407, top 247 - (407 - 247) = 87, and with
# the 10 px margin the box is:
DWPOSE_FACE_BOX = (127, 87, 387, 417)


def designed_face() -> np.ndarray:
    """[68, 2] landmarks (iBUG order) of the face the DWPose stand-in reports."""
    cx, cy = 257.1, 247.1
    t = np.linspace(0, np.pi, 17)
    jaw = np.stack([cx - 130 * np.cos(t), cy + 160 * np.sin(t)], axis=1)  # 0 .. 16, 8 the chin
    brows = np.stack([np.linspace(cx - 90, cx + 90, 10), np.full(10, cy - 80)], axis=1)  # 17 .. 26
    nose = np.stack([np.full(4, cx), np.linspace(cy - 60, cy + 20, 4)], axis=1)  # 27 .. 30
    nose[2, 1] = cy  # 29, the nose ridge
    nostrils = np.stack([np.linspace(cx - 20, cx + 20, 5), np.full(5, cy + 30)], axis=1)  # 31 .. 35
    eyes = np.stack([np.r_[np.linspace(cx - 70, cx - 30, 6), np.linspace(cx + 30, cx + 70, 6)],
                     np.full(12, cy - 40)], axis=1)  # 36 .. 47
    mouth = np.stack([np.linspace(cx - 45, cx + 45, 20), np.full(20, cy + 80)], axis=1)  # 48 .. 67
    return np.concatenate([jaw, brows, nose, nostrils, eyes, mouth])


def designed_pose_bins() -> tuple[np.ndarray, np.ndarray]:
    """SimCC bins of all 133 keypoints: the designed face at 23..90, the rest at bin 0."""
    x_bins = np.zeros(133, np.int64)
    y_bins = np.zeros(133, np.int64)
    face = designed_face()
    x_bins[23:91] = np.round(0.9 * face[:, 0] + 57.6)
    y_bins[23:91] = np.round(0.9 * face[:, 1] + 153.6)
    return x_bins, y_bins


def tiny_dwpose_model(models_dir: Path) -> Path:
    """models/dwpose/dw-ll_ucoco_384.onnx: DWPose's input [1, 3, 384, 288] and outputs,
    reporting the designed face whatever the frame."""
    x_bins, y_bins = designed_pose_bins()
    path = models_dir / DWPOSE_DIR / DWPOSE_MODEL
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            ConstantPose(x_bins, y_bins), torch.zeros(1, 3, 384, 288), str(path),
            input_names=["input"], output_names=["simcc_x", "simcc_y"], dynamo=False,
        )
    return path
