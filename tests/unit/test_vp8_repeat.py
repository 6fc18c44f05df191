"""The VP8 repeat frame: decoders show the picture before again, exactly, and the encoder's
next frames decode as if it had never been sent (FFmpeg's VP8 decoder and libvpx's)."""

from __future__ import annotations

import av
import numpy as np
import pytest

from server.media.video_encoder import Vp8FrameEncoder, to_yuv420p
from server.media.vp8_repeat import repeat_frame

DECODERS = ("vp8", "libvpx")  # FFmpeg's own, and libvpx (what browsers decode VP8 with)


def moving_picture(t: int, width: int, height: int) -> np.ndarray:
    """A picture that changes everywhere from one frame to the next, with a sharp block
    that moves: every macroblock of the encoder's next frame needs the right reference."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([(x + 7 * t) % 256, (y + 3 * t) % 256, ((x + y) // 2 + 5 * t) % 256], axis=-1)
    image = image.astype(np.uint8)
    top = (10 + 4 * t) % max(1, height - 20)
    image[top : top + 20, width // 3 : width // 3 + 20] = 255 - image[top : top + 20, width // 3 : width // 3 + 20]
    return image


def decode(decoder: str, packets: list[bytes]) -> list[np.ndarray]:
    context = av.CodecContext.create(decoder, "r")
    pictures = []
    for data in packets:
        frames = context.decode(av.Packet(data))
        assert len(frames) == 1, f"{decoder}: {len(frames)} frames for one packet"
        pictures.append(frames[0].to_ndarray(format="yuv420p").copy())
    return pictures


@pytest.mark.parametrize(("width", "height"), [(512, 512), (320, 240), (200, 120)])
@pytest.mark.parametrize("decoder", DECODERS)
def test_a_repeat_shows_the_picture_before_and_the_stream_goes_on_unchanged(
    decoder: str, width: int, height: int
) -> None:
    encoder = Vp8FrameEncoder()
    assert encoder.repeat() is None  # nothing to repeat before a first frame
    encoded, with_repeats, repeated = [], [], []
    for t in range(24):
        data, _ = encoder.encode(to_yuv420p(moving_picture(t, width, height)), t * 9000)
        encoded.append(data)
        with_repeats.append(data)
        repeated.append(False)
        if t % 2 == 1 or t % 7 == 0:  # after the keyframe too, and twice in a row at times
            for _ in range(1 + (t % 5 == 0)):
                repeat = encoder.repeat()
                assert repeat is not None
                with_repeats.append(repeat)
                repeated.append(True)
    assert encoder.frames_encoded == len(encoded)  # repeats cost the encoder nothing
    pictures = decode(decoder, encoded)
    plain = iter(pictures)
    shown = decode(decoder, with_repeats)
    for i, (picture, is_repeat) in enumerate(zip(shown, repeated, strict=True)):
        if is_repeat:
            np.testing.assert_array_equal(picture, shown[i - 1])
        else:
            np.testing.assert_array_equal(picture, next(plain))
    # The pictures did change from frame to frame (so a wrong reference would show).
    assert min(np.abs(b.astype(int) - a).mean() for a, b in zip(pictures, pictures[1:])) > 1


def test_the_repeat_frame_is_tiny_fixed_and_carries_the_stream_version() -> None:
    frame = repeat_frame(512, 512)
    assert len(frame) < 64
    assert frame[0] & 1  # an interframe
    assert frame[0] >> 4 & 1  # shown
    assert int.from_bytes(frame[:3], "little") >> 5 == len(frame) - 3 - 1  # first partition
    assert repeat_frame(512, 512) is frame  # built once per size
    assert repeat_frame(512, 512, version=1)[0] >> 1 & 7 == 1
    assert repeat_frame(1920, 1080) != frame


@pytest.mark.parametrize(("width", "height", "version"), [(0, 16, 0), (16, -1, 0), (16, 16, 4)])
def test_impossible_frames_are_refused(width: int, height: int, version: int) -> None:
    with pytest.raises(ValueError, match="no VP8 frame"):
        repeat_frame(width, height, version)
