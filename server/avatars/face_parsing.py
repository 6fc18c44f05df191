"""Face parsing with BiSeNet: a class label (skin, lips, nose...) for every pixel of a face.

The network is the one of zllrunning/face-parsing.PyTorch that MuseTalk uses, written out
here so that `79999_iter.pth` (a plain state_dict; keys `cp.*`, `ffm.*`, `conv_out*.*`)
loads into it strictly. It has no spatial path: the ResNet's 1/8 features take its place.
The channel widths are read from the checkpoint, so a tiny random checkpoint with the real
key names and layout (the tests use one) loads the same way as the real one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

FACE_PARSING_DIR = "face-parse-bisent"  # MuseTalk's folder name, spelling included
FACE_PARSING_WEIGHTS = "79999_iter.pth"
CLASS_COUNT = 19
"""CelebAMask-HQ classes; those the masks use are named below."""
SKIN, NOSE, MOUTH, UPPER_LIP, LOWER_LIP = 1, 10, 11, 12, 13

INPUT_SIZE = 512
# ImageNet statistics, as the network was trained with.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
REAL_WIDTH = 64
"""Channels of the first ResNet stage in the released weights; every other width follows."""


class ConvBNReLU(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, 1, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet's two-convolution block, with a 1x1 projection when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if in_channels != out_channels or stride != 1:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + residual)


def _stage(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        BasicBlock(in_channels, out_channels, stride), BasicBlock(out_channels, out_channels, 1)
    )


class Resnet18(nn.Module):
    """torchvision's ResNet-18 without its classifier; returns the 1/8, 1/16, 1/32 features."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _stage(width, width, 1)
        self.layer2 = _stage(width, 2 * width, 2)
        self.layer3 = _stage(2 * width, 4 * width, 2)
        self.layer4 = _stage(4 * width, 8 * width, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        feat8 = self.layer2(self.layer1(x))  # [B, 2w, H/8, W/8]
        feat16 = self.layer3(feat8)  # [B, 4w, H/16, W/16]
        feat32 = self.layer4(feat16)  # [B, 8w, H/32, W/32]
        return feat8, feat16, feat32


def _global_average(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, x.shape[2:])  # [B, C, 1, 1]


class AttentionRefinementModule(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels)
        self.conv_atten = nn.Conv2d(out_channels, out_channels, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        attention = torch.sigmoid(self.bn_atten(self.conv_atten(_global_average(feat))))
        return feat * attention


class ContextPath(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        context = 2 * width
        self.resnet = Resnet18(width)
        self.arm16 = AttentionRefinementModule(4 * width, context)
        self.arm32 = AttentionRefinementModule(8 * width, context)
        self.conv_head32 = ConvBNReLU(context, context)
        self.conv_head16 = ConvBNReLU(context, context)
        self.conv_avg = ConvBNReLU(8 * width, context, kernel=1, padding=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        context = F.interpolate(self.conv_avg(_global_average(feat32)), feat32.shape[2:], mode="nearest")
        feat32_up = F.interpolate(self.arm32(feat32) + context, feat16.shape[2:], mode="nearest")
        feat32_up = self.conv_head32(feat32_up)
        feat16_up = F.interpolate(self.arm16(feat16) + feat32_up, feat8.shape[2:], mode="nearest")
        feat16_up = self.conv_head16(feat16_up)
        return feat8, feat16_up  # both [B, 2w, H/8, W/8]


class FeatureFusionModule(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(in_channels, out_channels, kernel=1, padding=0)
        self.conv1 = nn.Conv2d(out_channels, out_channels // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_channels // 4, out_channels, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        attention = torch.sigmoid(self.conv2(F.relu(self.conv1(_global_average(feat)))))
        return feat * attention + feat


class BiSeNetOutput(nn.Module):
    def __init__(self, in_channels: int, mid_channels: int, classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_channels, mid_channels)
        self.conv_out = nn.Conv2d(mid_channels, classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """Per-pixel class scores [B, 19, H, W] of a face image [B, 3, H, W].

    `conv_out16` and `conv_out32` are the training-time auxiliary heads: they are in the
    checkpoint (so they exist here) but inference uses the main head only, as MuseTalk does.
    """

    def __init__(self, width: int = REAL_WIDTH, classes: int = CLASS_COUNT) -> None:
        super().__init__()
        self.cp = ContextPath(width)
        self.ffm = FeatureFusionModule(4 * width, 4 * width)
        self.conv_out = BiSeNetOutput(4 * width, 4 * width, classes)
        self.conv_out16 = BiSeNetOutput(2 * width, width, classes)
        self.conv_out32 = BiSeNetOutput(2 * width, width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat8, context8 = self.cp(x)
        scores = self.conv_out(self.ffm(feat8, context8))  # [B, 19, H/8, W/8]
        return F.interpolate(scores, x.shape[2:], mode="bilinear", align_corners=True)


def width_of(state_dict: Mapping[str, torch.Tensor]) -> int:
    """The network width a checkpoint was saved with (64 for the released weights)."""
    return int(state_dict["cp.resnet.conv1.weight"].shape[0])


def load_bisenet(path: Path, device: torch.device | str = "cpu") -> BiSeNet:
    """BiSeNet with the weights of `path` (`79999_iter.pth` or one in its layout).

    Raises `ValueError` when the file is not such a checkpoint.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises assorted errors for a damaged or foreign file
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({type(error).__name__})") from None
    if not isinstance(state, Mapping) or "cp.resnet.conv1.weight" not in state:
        raise ValueError(f"{path} is not a BiSeNet face-parsing checkpoint (no cp.resnet.conv1.weight)")
    classes = int(state["conv_out.conv_out.weight"].shape[0])
    net = BiSeNet(width_of(state), classes)
    missing, unexpected = net.load_state_dict(state, strict=False)
    # Checkpoints from before PyTorch 0.4.1 have no BatchNorm step counters; nothing else may differ.
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit BiSeNet: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return net.to(device).eval()


class FaceParser:
    """Labels [512, 512] (class ids 0..18) of an RGB face crop, as MuseTalk computes them."""

    def __init__(self, net: BiSeNet, device: torch.device | str = "cpu") -> None:
        self.net = net
        self.device = torch.device(device)
        self._mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1)

    @torch.inference_mode()
    def __call__(self, crop: Image.Image) -> np.ndarray:
        # PIL's bilinear resize (antialiased when shrinking), as MuseTalk's preprocessing.
        image = np.array(crop.convert("RGB").resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR))
        x = torch.from_numpy(image).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        scores = self.net((x - self._mean) / self._std)[0]  # [19, 512, 512]
        if scores.is_cuda:
            return scores.argmax(0).to(torch.uint8).cpu().numpy()
        # On the CPU numpy's argmax over the classes is several times faster than torch's.
        return scores.numpy().argmax(0).astype(np.uint8)


def face_parsing_weights(models_dir: Path) -> Path:
    return models_dir / FACE_PARSING_DIR / FACE_PARSING_WEIGHTS


def open_face_parser(models_dir: Path, device: str) -> FaceParser | None:
    """The parser with the weights in `models_dir`, or None when they are absent."""
    path = face_parsing_weights(models_dir)
    if not path.is_file():
        return None
    return FaceParser(load_bisenet(path, device), device)
