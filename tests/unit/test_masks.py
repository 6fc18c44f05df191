"""Blending masks as MuseTalk makes them: the square, the jaw (1.5) or raw (1.0) region, the blur."""

from __future__ import annotations

import numpy as np

from server.avatars.face_parsing import LOWER_LIP, MOUTH, NOSE, SKIN, UPPER_LIP

NECK = 14
from server.avatars.masks import (
    blend_mask,
    blur_kernel_size,
    cheek_mask,
    crop_padded,
    jaw_kernel,
    jaw_region,
    mask_box,
    raw_region,
)


def test_mask_square_is_one_and_a_half_times_the_larger_side_around_the_box() -> None:
    # Centre (200, 225); larger side 210 -> 105 * 1.5 = 157.5 -> 157 each way.
    assert mask_box((100, 120, 300, 330)) == (43, 68, 357, 382)


def test_blur_kernel_is_odd_and_a_tenth_of_the_square() -> None:
    assert blur_kernel_size(314) == 31  # 31.4 // 2 = 15, * 2 = 30, + 1
    assert blur_kernel_size(100) == 11
    assert blur_kernel_size(99) == 9  # 9.9 // 2 = 4


def test_jaw_kernel_is_a_cone_on_a_tail() -> None:
    kernel = jaw_kernel()
    assert kernel.shape == (33, 33) and kernel.sum() == 373
    assert kernel[:10].sum() == 0
    assert kernel[10].nonzero()[0].tolist() == [16]
    assert kernel[20].nonzero()[0].tolist() == list(range(6, 27))
    assert all(kernel[row].nonzero()[0].tolist() == list(range(6, 27)) for row in range(21, 33))


def test_cheek_bands_leave_the_middle_free() -> None:
    mask = cheek_mask()
    assert (mask[:, :167] == 255).all() and (mask[:, 346:] == 255).all()
    assert (mask[:, 167:346] == 0).all()


def test_jaw_region_grows_skin_up_keeps_lips_drops_the_nose_and_trims_cheeks() -> None:
    labels = np.zeros((512, 512), np.uint8)
    labels[250:351, 200:311] = SKIN  # in the middle band
    labels[260:281, 240:271] = NOSE
    labels[400:411, 230:281] = UPPER_LIP
    labels[411:421, 230:281] = LOWER_LIP
    labels[250:351, 20:101] = SKIN  # on a cheek band
    region = jaw_region(labels)
    middle = region[:, 255]
    assert middle[234:260].min() == 255 and middle[233] == 0  # 16 rows grown upwards
    assert middle[281:357].min() == 255 and middle[357] == 0  # 6 rows downwards
    assert region[260:281, 240:271].max() == 0  # the nose stays
    assert region[400:421, 230:281].min() == 255  # lips always change
    # On the cheek the grown skin is eroded back sideways by twice 17 pixels.
    assert region[300, 30] == 0 and region[300, 60] == 255 and region[300, 95] == 0


def test_crop_padded_is_black_off_the_frame() -> None:
    frame = np.full((10, 10), 7, np.uint8)
    crop = crop_padded(frame, (-2, -3, 5, 4))
    assert crop.shape == (7, 7)
    assert (crop[:3] == 0).all() and (crop[:, :2] == 0).all() and (crop[3:, 2:] == 7).all()


def test_feathered_mask_covers_the_lower_face_only() -> None:
    frame = np.zeros((200, 200, 3), np.uint8)
    face_box = (60, 40, 140, 160)
    mask, square = blend_mask(frame, face_box, parser=None)
    # Centre (100, 100), larger side 120 -> 60 * 1.5 = 90 each way.
    assert square == (10, 10, 190, 190) and mask.shape == (180, 180)
    assert mask[:80].max() == 0  # the upper half, beyond the blur's reach
    assert mask[130, 90] == 255  # the chin, frame (100, 140)
    assert mask[:, :40].max() == 0 and mask[:, 141:].max() == 0  # beside the face box


def test_feathered_mask_within_the_box_has_soft_edges_at_the_chin_and_the_square_middle() -> None:
    box = (100, 100, 300, 340)
    mask, square = blend_mask(np.zeros((480, 480, 3), np.uint8), box, parser=None)
    part = mask[box[1] - square[1] : box[3] - square[1], box[0] - square[0] : box[2] - square[0]]
    assert part.shape == (240, 200)
    square_middle = 220 - 100  # row of the box at the square's middle row (y 220)
    assert part[: square_middle - 20].max() == 0  # upper face: never generated
    assert part[square_middle + 30 : 200, 80:120].min() == 255  # the mouth: fully generated
    assert 0 < part[-1, 100] < 255  # at the chin the ellipse ends, softly
    assert part[:, 0].max() < 128  # the ellipse leaves the box's corners and sides to the frame
    assert 0 < part[square_middle + 2, 100] < 255  # the upper edge is soft


def test_raw_region_is_skin_lips_and_mouth_as_parsed() -> None:
    labels = np.zeros((512, 512), np.uint8)
    labels[250:351, 200:311] = SKIN
    labels[260:281, 240:271] = NOSE
    labels[300:311, 230:281] = MOUTH
    labels[400:411, 230:281] = UPPER_LIP
    labels[411:421, 230:281] = LOWER_LIP
    labels[450:500, 200:311] = NECK
    region = raw_region(labels)
    assert region.dtype == np.uint8 and set(np.unique(region)) == {0, 255}
    expected = np.isin(labels, (SKIN, MOUTH, UPPER_LIP, LOWER_LIP))
    assert ((region == 255) == expected).all()  # nothing grown, nothing eroded
    assert region[260:281, 240:271].max() == 0 and region[450:500].max() == 0  # nose, neck


class FixedParser:
    """A face parser that labels every picture with the same 512 x 512 classes."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels

    def __call__(self, picture) -> np.ndarray:
        return self.labels


def test_the_parsing_mode_picks_the_region() -> None:
    # Skin in the middle band: 1.5's jaw mode grows it 16 px upwards, 1.0's raw mode does not.
    labels = np.zeros((512, 512), np.uint8)
    labels[300:400, 200:311] = SKIN
    frame = np.zeros((512, 512, 3), np.uint8)
    box = (85, 85, 427, 427)  # square (0, 0, 512, 512): the parsing maps 1:1 onto the frame
    assert mask_box(box) == (0, 0, 512, 512)
    jaw, _ = blend_mask(frame, box, FixedParser(labels), mode="jaw")
    raw, _ = blend_mask(frame, box, FixedParser(labels), mode="raw")
    assert raw.sum() < jaw.sum()
    # Far above the skin's top edge (300) but within the jaw's 16 px: only jaw blends there.
    assert jaw[290, 255] > 200 and raw[290, 255] < 60
    assert raw[350, 255] == jaw[350, 255] == 255
