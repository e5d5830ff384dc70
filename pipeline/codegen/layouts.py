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


def requant_fast_ok(shift: int) -> bool:
    """mf_requant_fast_ok: the shifts the fast requantization handles."""
    return -23 <= int(shift) <= -2


def pack_requant(multiplier: np.ndarray, shift: np.ndarray, output_offset: int) -> np.ndarray:
    """Per output channel {multiplier, shift, round} for the fast kernels (mf_simd.h).

    round = 2^(-shift-2) + output_offset * 2^(-shift-1) where the fast
    requantization applies, 0 elsewhere (the kernel then uses mf_requantize).
    """
    m = np.asarray(multiplier, np.int64).reshape(-1)
    s = np.asarray(shift, np.int64).reshape(-1)
    rnd = np.array([(1 << (-int(v) - 2)) + int(output_offset) * (1 << (-int(v) - 1))
                    if requant_fast_ok(v) else 0 for v in s], np.int64)
    return np.stack([m, s, rnd], axis=1).astype(np.int32).reshape(-1)
