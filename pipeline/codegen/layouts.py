"""Constants laid out for the fast kernels, and the scratch memory they need.

What a fast kernel would otherwise do at every inference, code generation does
once: pad and interleave the weight rows the way the inner loop reads them,
and fold ``input_offset * sum(weights)`` into the bias (see
``firmware_templates/runtime/src/conv2d_s8_fast.c``). Each function here
mirrors the layout comment of its C kernel; the kernel tests feed these
arrays to the C code and compare its bytes with the numpy reference, and
check the scratch sizes against the C ``*_get_buffer_size`` companions.
"""

from __future__ import annotations

import numpy as np

from ..quantize.fixedpoint import multiply_by_quantized_multiplier


def round_up4(k: int) -> int:
    return (k + 3) // 4 * 4


def pack_conv_weights(weights: np.ndarray) -> np.ndarray:
    """OHWI conv (or [out, in] fully connected) weights -> mf_conv2d_s8_fast's layout.

    Rows of K = kh*kw*in_c bytes are zero-padded to a multiple of four, then
    rows 2j and 2j+1 are interleaved four bytes at a time; an odd last row
    stays alone.
    """
    w = np.asarray(weights, dtype=np.int8)
    rows = w.reshape(w.shape[0], -1)
    out_c, k = rows.shape
    k4 = round_up4(k)
    padded = np.zeros((out_c, k4), dtype=np.int8)
    padded[:, :k] = rows
    pairs = out_c // 2
    body = padded[:2 * pairs].reshape(pairs, 2, k4 // 4, 4).transpose(0, 2, 1, 3).reshape(-1)
    return np.concatenate([body, padded[2 * pairs:].reshape(-1)])


def fold_bias(bias: np.ndarray | None, weights: np.ndarray, input_offset: int) -> np.ndarray:
    """bias + input_offset * (sum of each output channel's weights), wrapped to int32.

    The kernel's sums wrap modulo 2^32 as well, and the true accumulator fits
    in int32, so the wrapped constant gives the same result.
    """
    w = np.asarray(weights, dtype=np.int64)
    rows = w.reshape(w.shape[0], -1)
    b = np.zeros(rows.shape[0], np.int64) if bias is None else np.asarray(bias, np.int64)
    folded = b + int(input_offset) * rows.sum(axis=1)
    return ((folded + (1 << 31)) % (1 << 32) - (1 << 31)).astype(np.int32)


def conv_fast_buffer_size(in_c: int, k_h: int, k_w: int, out_h: int, out_w: int) -> int:
    """Scratch bytes of mf_conv2d_s8_fast (mf_conv2d_s8_fast_get_buffer_size)."""
    k4 = round_up4(k_h * k_w * in_c)
    n_cols = 2 if out_h * out_w >= 2 else 1
    return n_cols * k4 * 2 + (k4 if in_c % 4 else 0)


RQ_FAST, RQ_SMALL = 1, 2  # mf_simd.h's MF_RQ_FAST, MF_RQ_SMALL


def requant_fast_ok(shift: int) -> bool:
    """The shifts the fast requantization handles: right shifts of 2 to 22."""
    return -22 <= int(shift) <= -2


def accumulators_small(bias: np.ndarray, weights: np.ndarray, max_input: int = 128) -> bool:
    """Every accumulator of the layer provably within +-2^30 (mf_simd.h's MF_RQ_SMALL).

    ``bias`` is what the kernel starts from (folded for the fast kernels),
    ``weights`` one row per output channel; the kernel multiplies inputs of
    magnitude at most ``max_input`` (128 for raw int8).
    """
    w = np.abs(np.asarray(weights, np.int64).reshape(len(bias), -1)).sum(axis=1)
    bound = np.abs(np.asarray(bias, np.int64)) + int(max_input) * w
    return bool((bound < (1 << 30)).all())


def pack_requant(multiplier: np.ndarray, shift: np.ndarray, output_offset: int,
                 small: bool = False, *, weights: np.ndarray | None = None,
                 bias: np.ndarray | None = None, mode: str = "double") -> np.ndarray:
    """A layer's requantization for the fast kernels: int32 [flags, (multiplier, e, round)...].

    e = -shift, round = 2^(e-1) + output_offset * 2^e (mf_simd.h). flags has
    RQ_FAST when every channel's shift qualifies, and RQ_SMALL when ``small``
    (see accumulators_small) as well.

    Constant channels do not count against RQ_FAST: an output channel whose
    weights are all zero (``weights``, one row per channel, and ``bias``, the
    accumulator the kernel starts from, given) always has the accumulator
    ``bias``, and one with multiplier 0 always requantizes to 0. Pruning makes
    such channels (a zero weight scale quantizes to shift 0 or +1, outside
    2..22), and one of them used to send the whole layer down the slow path.
    Their output c (requantized in ``mode``, offset, saturated to int8) is
    written as multiplier 0, e = 2, round = 4c: every fast form then computes
    (0 + round) >> e = c for any accumulator (SMMULR/SMMUL of 0 is 0), and the
    clamp to the activation range follows as for any channel.
    """
    m = np.asarray(multiplier, np.int64).reshape(-1)
    s = np.asarray(shift, np.int64).reshape(-1)
    const = m == 0
    if weights is not None and bias is not None:
        rows = np.asarray(weights).reshape(len(m), -1)
        const = const | ~rows.any(axis=1)
    fast = all(requant_fast_ok(v) or c for v, c in zip(s, const, strict=True))
    if fast and const.any():
        acc = np.zeros(len(m), np.int64) if bias is None else np.asarray(bias, np.int64).reshape(-1)
        acc = np.where(m == 0, 0, acc)
        out = multiply_by_quantized_multiplier(acc, m, s, mode) + int(output_offset)
        c = np.clip(out, -128, 127)
        m = np.where(const, 0, m)
        s = np.where(const, -2, s)
    rnd = np.array([(1 << (-int(v) - 1)) + int(output_offset) * (1 << -int(v))
                    if requant_fast_ok(v) else 0 for v in s], np.int64)
    if fast and const.any():
        rnd = np.where(const, 4 * c, rnd)
    flags = (RQ_FAST | (RQ_SMALL if small else 0)) if fast else 0
    body = np.stack([m, -s, rnd], axis=1).reshape(-1)
    return np.concatenate([[flags], body]).astype(np.int32)


def add_tables(params: dict, mode: str = "double") -> np.ndarray:
    """mf_add_s8_fast's tables: each input's rescaled value for every int8 x, int32 [2 * 256].

    The same arithmetic as microfit.reference.ops.add_s8 applies to each input.
    """
    x = np.arange(-128, 128, dtype=np.int64)
    tables = []
    for i in (1, 2):
        a = (x + int(params[f"input{i}_offset"])) << int(params["left_shift"])
        tables.append(multiply_by_quantized_multiplier(
            a, int(params[f"input{i}_multiplier"]), int(params[f"input{i}_shift"]), mode))
    return np.concatenate(tables).astype(np.int32)


def pack_depthwise_weights(weights: np.ndarray) -> np.ndarray:
    """[1, kh, kw, C] depthwise weights (multiplier 1) -> mf_depthwise_conv2d_s8_fast's layout.

    int16, channel c's weights starting at c * taps: each whole group of four
    channels as one block of taps x (c, c+2, c+1, c+3); the last C % 4
    channels each as its taps in order.
    """
    w = np.asarray(weights, dtype=np.int16)
    per_channel = w.reshape(-1, w.shape[-1]).T  # [C, taps]
    c = per_channel.shape[0]
    quads = c // 4 * 4
    blocks = per_channel[:quads].reshape(-1, 4, per_channel.shape[1])[:, [0, 2, 1, 3], :]
    return np.concatenate([blocks.transpose(0, 2, 1).reshape(-1),
                           per_channel[quads:].reshape(-1)]).astype(np.int16)


def depthwise_biases(bias: np.ndarray | None, weights: np.ndarray, input_offset: int) -> np.ndarray:
    """[folded bias, zero line] for mf_depthwise_conv2d_s8_fast, int32 [C + ceil(C / 4)].

    The zero line is C bytes of the input zero point (-input_offset), padded
    to whole words: taps in the padding read it, so that they add
    (zero_point + input_offset) * w = 0 to the folded sum.
    """
    w = np.asarray(weights, dtype=np.int64)
    per_channel = w.reshape(-1, w.shape[-1]).T  # [C, taps]
    c = per_channel.shape[0]
    plain = np.zeros(c, np.int32) if bias is None else np.asarray(bias, np.int32)
    line = np.zeros(round_up4(c), np.int8)
    line[:c] = -int(input_offset)
    return np.concatenate([fold_bias(plain, per_channel, input_offset),
                           line.view("<i4")]).astype(np.int32)


def depthwise_small(biases: np.ndarray, weights: np.ndarray) -> bool:
    """accumulators_small for mf_depthwise_conv2d_s8_fast: the folded bias plus raw int8
    inputs (padded taps read the zero point, an int8 as well)."""
    per_channel = np.asarray(weights, np.int64).reshape(-1, np.asarray(weights).shape[-1]).T
    return accumulators_small(biases[:per_channel.shape[0]], per_channel)


def avr_group(weights: np.ndarray, in_c: int) -> int:
    """mf_conv2d_s8_avr's group: the most consecutive products of one tap (runs of
    ``in_c`` weights) whose 16-bit partial sum provably cannot overflow,
    128 * sum|w| <= 32767 for every window of that length."""
    w = np.abs(np.asarray(weights, np.int64)).reshape(-1, int(in_c))  # one run per (row, tap)
    prefix = np.concatenate([np.zeros((w.shape[0], 1), np.int64), np.cumsum(w, axis=1)], axis=1)
    best = 1
    for g in range(2, int(in_c) + 1):
        window = prefix[:, g:] - prefix[:, :-g]
        if 128 * int(window.max()) > 32767:
            break
        best = g
    return best
