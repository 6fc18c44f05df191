"""The track's VP8 encoder: whole frames, keyframes when asked, the bitrate a receiver asks for."""

from __future__ import annotations

import av
import numpy as np

from server.lipsync.demo.face import build_demo_avatar
from server.media.video_encoder import BITRATE, Vp8FrameEncoder, to_yuv420p, yuv420p_frame

FRAMES = [to_yuv420p(frame) for frame in build_demo_avatar().frames[:8]]
STEP = 3600  # 90 kHz ticks per frame at 25 fps


def encode_some(encoder: Vp8FrameEncoder, start: int, count: int, **options: object) -> list[tuple[bytes, bool]]:
    return [encoder.encode(FRAMES[i % len(FRAMES)], (start + i) * STEP, **options) for i in range(count)]


def test_the_first_frame_is_a_keyframe_and_the_next_are_not_unless_asked() -> None:
    encoder = Vp8FrameEncoder()
    keys = [key for _, key in encode_some(encoder, 0, 6)]
    assert keys == [True, False, False, False, False, False]
    _, key = encoder.encode(FRAMES[0], 6 * STEP, keyframe=True)
    assert key


def test_a_new_bitrate_reopens_the_encoder_with_a_keyframe_and_a_near_one_does_not() -> None:
    encoder = Vp8FrameEncoder()
    encode_some(encoder, 0, 3)
    assert [key for _, key in encode_some(encoder, 3, 2, bitrate=BITRATE + BITRATE // 20)] == [False, False]
    assert [key for _, key in encode_some(encoder, 5, 2, bitrate=2 * BITRATE)] == [True, False]
    assert encoder.bitrate == 2 * BITRATE


def test_its_frames_decode_in_order() -> None:
    decoder = av.CodecContext.create("libvpx", "r")
    for data, _ in encode_some(Vp8FrameEncoder(), 0, 8):
        assert len(decoder.decode(av.Packet(data))) == 1


def test_the_fast_conversion_gives_the_pictures_pyav_gives() -> None:
    image = build_demo_avatar().frames[3]
    fast, reference = to_yuv420p(image), yuv420p_frame(image).to_ndarray()
    height = image.shape[0]
    assert fast.shape == reference.shape == (height * 3 // 2, image.shape[1])
    luma = np.abs(fast[:height].astype(int) - reference[:height].astype(int))
    chroma = np.abs(fast[height:].astype(int) - reference[height:].astype(int))
    assert luma.max() <= 1
    assert chroma.mean() < 1  # the 2×2 chroma samples may differ on a few sharp edges


def test_a_scaled_or_odd_sized_picture_is_converted_to_its_own_size() -> None:
    image = build_demo_avatar().frames[0]
    assert to_yuv420p(image, (256, 256)).shape == (384, 256)
    assert to_yuv420p(image[:301, :203]).shape == (450, 202)  # the odd row and column left out
