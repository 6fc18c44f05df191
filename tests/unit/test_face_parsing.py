"""BiSeNet face parsing: the real checkpoint's layout loads; tiny weights in it run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from server.avatars.face_parsing import BiSeNet, load_bisenet, open_face_parser
from server.avatars.masks import blend_mask
from server.lipsync.demo.face import draw_face
from tests.avatar_files import TINY_BISENET_WIDTH, tiny_face_parsing_weights

# Keys and shapes of zllrunning's 79999_iter.pth (width 64, 19 classes), one per module kind.
REAL_SHAPES = {
    "cp.resnet.conv1.weight": (64, 3, 7, 7),
    "cp.resnet.layer1.0.conv1.weight": (64, 64, 3, 3),
    "cp.resnet.layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "cp.resnet.layer2.0.downsample.1.running_var": (128,),
    "cp.resnet.layer4.1.bn2.weight": (512,),
    "cp.arm16.conv.conv.weight": (128, 256, 3, 3),
    "cp.arm16.conv_atten.weight": (128, 128, 1, 1),
    "cp.arm32.bn_atten.running_mean": (128,),
    "cp.conv_head32.conv.weight": (128, 128, 3, 3),
    "cp.conv_head16.bn.bias": (128,),
    "cp.conv_avg.conv.weight": (128, 512, 1, 1),
    "ffm.convblk.conv.weight": (256, 256, 1, 1),
    "ffm.conv1.weight": (64, 256, 1, 1),
    "ffm.conv2.weight": (256, 64, 1, 1),
    "conv_out.conv.conv.weight": (256, 256, 3, 3),
    "conv_out.conv_out.weight": (19, 256, 1, 1),
    "conv_out16.conv.conv.weight": (64, 128, 3, 3),
    "conv_out32.conv_out.weight": (19, 64, 1, 1),
}


def test_the_network_has_the_released_checkpoints_keys_and_shapes() -> None:
    state = BiSeNet().state_dict()
    for key, shape in REAL_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    prefixes = {key.split(".")[0] for key in state}
    assert prefixes == {"cp", "ffm", "conv_out", "conv_out16", "conv_out32"}  # no sp., no fc.


def test_tiny_weights_in_the_real_layout_load_and_parse_a_face(tmp_path: Path) -> None:
    path = tiny_face_parsing_weights(tmp_path)
    assert path.relative_to(tmp_path).as_posix() == "face-parse-bisent/79999_iter.pth"
    parser = open_face_parser(tmp_path, "cpu")
    assert parser is not None
    assert parser.net.cp.resnet.conv1.out_channels == TINY_BISENET_WIDTH
    labels = parser(Image.fromarray(draw_face(0)[100:400, 100:400]))
    assert labels.shape == (512, 512) and labels.dtype == np.uint8 and labels.max() < 19


def test_the_mask_of_a_parsed_face_is_its_lower_half(tmp_path: Path) -> None:
    tiny_face_parsing_weights(tmp_path)
    parser = open_face_parser(tmp_path, "cpu")
    mask, square = blend_mask(draw_face(0), (118, 80, 394, 416), parser)
    side = square[2] - square[0]
    assert mask.shape == (side, side)
    assert mask[: side // 2 - side // 10].max() == 0


def test_a_checkpoint_from_before_batchnorm_counters_loads(tmp_path: Path) -> None:
    state = {k: v for k, v in BiSeNet(4).state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    assert isinstance(load_bisenet(tmp_path / "old.pth"), BiSeNet)


def test_no_weights_means_no_parser(tmp_path: Path) -> None:
    assert open_face_parser(tmp_path, "cpu") is None


def test_another_checkpoint_is_refused_with_its_name(tmp_path: Path) -> None:
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth is not a BiSeNet"):
        load_bisenet(tmp_path / "other.pth")
    state = BiSeNet(4).state_dict()
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match="unexpected"):
        load_bisenet(tmp_path / "extra.pth")

