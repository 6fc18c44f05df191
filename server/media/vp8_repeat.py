"""A VP8 frame that shows the last picture again, written without an encoder.

At playback_fps above fps a third of a speaking session's frames (10 / 15) repeat the
picture before. libvpx re-encodes each from scratch (1.3 ms at 512×512, motion search
and all) to send almost nothing. This frame is what it would ideally send: every
macroblock inter-predicted from the last frame with a zero motion vector and no residual,
the loop filter off, and nothing the decoder keeps changed (no probability, buffer,
segmentation or filter update; the last frame buffer itself not refreshed). The decoder
shows its last picture again, exactly, and the encoder's next frame finds the decoder as
that encoder left it. It depends only on the picture's size (and the stream's version),
so it is built once per size: 43 bytes for 512×512.

The bitstream is RFC 6386's: the frame tag (§9.1), the first partition's frame header
(§9.2–9.11, §19.2) and macroblock headers (§19.3) bool-coded (§7), and a token partition
of one zero byte, from which nothing is read (no macroblock has coefficients).
"""

from __future__ import annotations

import functools

# Probabilities that a coefficient probability is updated, by [block type][band][context]
# [token tree node] (RFC 6386 §13.4, `coeff_update_probs`): 255 except these.
_COEFF_UPDATE_NOT_255 = {
    (0, 1, 0): {0: 176, 1: 246}, (0, 1, 1): {0: 223, 1: 241, 2: 252},
    (0, 1, 2): {0: 249, 1: 253, 2: 253}, (0, 2, 0): {1: 244, 2: 252},
    (0, 2, 1): {0: 234, 1: 254, 2: 254}, (0, 2, 2): {0: 253}, (0, 3, 0): {1: 246, 2: 254},
    (0, 3, 1): {0: 239, 1: 253, 2: 254}, (0, 3, 2): {0: 254, 2: 254},
    (0, 4, 0): {1: 248, 2: 254}, (0, 4, 1): {0: 251, 2: 254}, (0, 5, 0): {1: 253, 2: 254},
    (0, 5, 1): {0: 251, 1: 254, 2: 254}, (0, 5, 2): {0: 254, 2: 254},
    (0, 6, 0): {1: 254, 2: 253, 4: 254}, (0, 6, 1): {0: 250, 2: 254, 4: 254},
    (0, 6, 2): {0: 254},
    (1, 0, 0): {0: 217}, (1, 0, 1): {0: 225, 1: 252, 2: 241, 3: 253, 6: 254},
    (1, 0, 2): {0: 234, 1: 250, 2: 241, 3: 250, 4: 253, 6: 253, 7: 254},
    (1, 1, 0): {1: 254}, (1, 1, 1): {0: 223, 1: 254, 2: 254},
    (1, 1, 2): {0: 238, 1: 253, 2: 254, 3: 254}, (1, 2, 0): {1: 248, 2: 254},
    (1, 2, 1): {0: 249, 1: 254}, (1, 3, 0): {1: 253}, (1, 3, 1): {0: 247, 1: 254},
    (1, 4, 0): {1: 253, 2: 254}, (1, 4, 1): {0: 252}, (1, 5, 0): {1: 254, 2: 254},
    (1, 5, 1): {0: 253}, (1, 6, 0): {1: 254, 2: 253}, (1, 6, 1): {0: 250},
    (1, 6, 2): {0: 254},
    (2, 0, 0): {0: 186, 1: 251, 2: 250}, (2, 0, 1): {0: 234, 1: 251, 2: 244, 3: 254},
    (2, 0, 2): {0: 251, 1: 251, 2: 243, 3: 253, 4: 254, 6: 254},
    (2, 1, 0): {1: 253, 2: 254}, (2, 1, 1): {0: 236, 1: 253, 2: 254},
    (2, 1, 2): {0: 251, 1: 253, 2: 253, 3: 254, 4: 254}, (2, 2, 0): {1: 254, 2: 254},
    (2, 2, 1): {0: 254, 1: 254, 2: 254}, (2, 3, 0): {1: 254}, (2, 3, 1): {0: 254, 1: 254},
    (2, 3, 2): {0: 254}, (2, 4, 1): {0: 254},
    (3, 0, 0): {0: 248}, (3, 0, 1): {0: 250, 1: 254, 2: 252, 3: 254},
    (3, 0, 2): {0: 248, 1: 254, 2: 249, 3: 253}, (3, 1, 0): {1: 253, 2: 253},
    (3, 1, 1): {0: 246, 1: 253, 2: 253}, (3, 1, 2): {0: 252, 1: 254, 2: 251, 3: 254, 4: 254},
    (3, 2, 0): {1: 254, 2: 252}, (3, 2, 1): {0: 248, 1: 254, 2: 253},
    (3, 2, 2): {0: 253, 2: 254, 3: 254}, (3, 3, 0): {1: 251, 2: 254},
    (3, 3, 1): {0: 245, 1: 251, 2: 254}, (3, 3, 2): {0: 253, 1: 253, 2: 254},
    (3, 4, 0): {1: 251, 2: 253}, (3, 4, 1): {0: 252, 1: 253, 2: 254}, (3, 4, 2): {1: 254},
    (3, 5, 0): {1: 252}, (3, 5, 1): {0: 249, 2: 254}, (3, 5, 2): {2: 254},
    (3, 6, 0): {2: 253}, (3, 6, 1): {0: 250}, (3, 7, 1): {0: 254},
}
_BLOCK_TYPES, _BANDS, _CONTEXTS, _TREE_NODES = 4, 8, 3, 11
# Probabilities that a motion vector probability is updated (§17.2, `vp8_mv_update_probs`),
# for the row and the column component.
_MV_UPDATE = (
    (237, 246, 253, 253, 254, 254, 254, 254, 254, 254, 254, 254, 254, 254, 250, 250, 252, 254, 254),
    (231, 243, 245, 253, 254, 254, 254, 254, 254, 254, 254, 254, 254, 254, 251, 251, 254, 254, 254),
)
# The first branch of the inter mode tree (ZEROMV or not) by how much of the macroblock's
# neighbourhood (above and left 2 each, above-left 1) is inter-predicted with a zero
# vector (§16.3, the first column of `vp8_mode_contexts`).
_ZERO_MV_PROBABILITY = (7, 14, 135, 60, 159, 234)

# The per-frame probabilities this frame declares: the rarely taken branch costs little.
_PROB_SKIP_FALSE = 1  # P(a macroblock has coefficients): none has
_PROB_INTRA = 1  # P(a macroblock is intra-predicted): none is
_PROB_LAST = 255  # P(it predicts from the last frame, not golden or altref): all do
_PROB_GOLDEN = 128  # golden against altref: unused
_HALF = 128  # literals (L(n) in the RFC) are bits at even odds


class _BoolEncoder:
    """RFC 6386 §7's boolean entropy encoder, exact: the interval's low end is an
    unbounded integer, so no carry ever has to be propagated into bytes already out."""

    def __init__(self) -> None:
        self._low = 0
        self._range = 255
        self._shifted = 0  # bits of precision below the first byte's

    def bit(self, value: bool, probability: int) -> None:
        """`value`, zero with `probability` / 256."""
        split = 1 + (((self._range - 1) * probability) >> 8)
        if value:
            self._low += split
            self._range -= split
        else:
            self._range = split
        while self._range < 128:
            self._range <<= 1
            self._low <<= 1
            self._shifted += 1

    def literal(self, value: int, bits: int) -> None:
        for shift in reversed(range(bits)):
            self.bit(bool(value >> shift & 1), _HALF)

    def data(self) -> bytes:
        """The code: the interval's low end, a binary fraction whose integer part is the
        first byte, padded with zero bits to whole bytes (decoders read zeros past it)."""
        pad = -self._shifted % 8
        return (self._low << pad).to_bytes(1 + (self._shifted + pad) // 8, "big")


@functools.lru_cache(maxsize=16)
def repeat_frame(width: int, height: int, version: int = 0) -> bytes:
    """The VP8 interframe that shows the last decoded picture, `width`×`height`, again.

    `version` is the stream's (the 3 bits after the frame tag's first, §9.1), as its
    encoder writes them."""
    if width <= 0 or height <= 0 or not 0 <= version <= 3:
        raise ValueError(f"no VP8 frame of {width}x{height}, version {version}")
    header = _BoolEncoder()
    header.literal(0, 1)  # segmentation_enabled: the segment map stays as it is
    header.literal(0, 1)  # filter_type
    header.literal(0, 6)  # loop_filter_level 0: no filtering, the picture is copied
    header.literal(0, 3)  # sharpness_level
    header.literal(0, 1)  # loop_filter_adj_enable
    header.literal(0, 2)  # log2_nbr_of_dct_partitions: one token partition
    header.literal(0, 7)  # y_ac_qi (there are no coefficients to dequantize)
    header.literal(0, 5)  # no quantizer deltas (y_dc, y2_dc, y2_ac, uv_dc, uv_ac)
    header.literal(0, 1)  # refresh_golden_frame
    header.literal(0, 1)  # refresh_alternate_frame
    header.literal(0, 2)  # copy_buffer_to_golden: none
    header.literal(0, 2)  # copy_buffer_to_alternate: none
    header.literal(0, 1)  # sign_bias_golden
    header.literal(0, 1)  # sign_bias_alternate
    header.literal(0, 1)  # refresh_entropy_probs 0: the probabilities are put back after
    header.literal(0, 1)  # refresh_last 0: the last frame buffer is not written
    for i in range(_BLOCK_TYPES):
        for j in range(_BANDS):
            for k in range(_CONTEXTS):
                odd = _COEFF_UPDATE_NOT_255.get((i, j, k), {})
                for node in range(_TREE_NODES):
                    header.bit(False, odd.get(node, 255))  # no coefficient probability update
    header.literal(1, 1)  # mb_no_coeff_skip: each macroblock says it has no coefficients
    header.literal(_PROB_SKIP_FALSE, 8)
    header.literal(_PROB_INTRA, 8)
    header.literal(_PROB_LAST, 8)
    header.literal(_PROB_GOLDEN, 8)
    header.literal(0, 1)  # intra_16x16_prob_update_flag
    header.literal(0, 1)  # intra_chroma_prob_update_flag
    for component in _MV_UPDATE:
        for probability in component:
            header.bit(False, probability)  # no motion vector probability update
    rows, columns = -(-height // 16), -(-width // 16)
    for row in range(rows):
        for column in range(columns):
            header.bit(True, _PROB_SKIP_FALSE)  # mb_skip_coeff: no coefficients
            header.bit(True, _PROB_INTRA)  # is_inter_mb
            header.bit(False, _PROB_LAST)  # mb_ref_frame_sel1: the last frame
            zeros = 2 * (row > 0) + 2 * (column > 0) + (row > 0 and column > 0)
            header.bit(False, _ZERO_MV_PROBABILITY[zeros])  # mv_mode: ZEROMV
    first = header.data()
    if len(first) >= 1 << 19:
        raise ValueError(f"a {width}x{height} VP8 frame header does not fit the frame tag")
    # Frame tag: an interframe (bit 0 set), the version, shown, the first partition's size.
    tag = 1 | version << 1 | 1 << 4 | len(first) << 5
    # The token partition: nothing is read from it, but FFmpeg's decoder refuses it empty.
    return tag.to_bytes(3, "little") + first + bytes(1)
