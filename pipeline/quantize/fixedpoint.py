"""Fixed-point requantization, exactly as TFLite computes it.

This module is the Python twin of ``firmware_templates/runtime/include/mf_fixedpoint.h``.
Every kernel of the numpy reference and of the C runtime requantizes through
these few functions, so the two stay bit-identical.

Two rounding modes exist in the TFLite world (see docs/quantization.md):

``"double"`` (default)
    What TFLite Micro and CMSIS-NN run on devices: a saturating rounding
    doubling high multiply, then a rounding divide by a power of two.
``"single"``
    What the LiteRT interpreter computes (``TFLITE_SINGLE_ROUNDING``):
    one 64-bit multiply, one add of half, one arithmetic shift.

The two differ by one on some outputs; neither is a tolerance for the other.

A third arithmetic, ``"litert"``, exists only in the numpy reference: what the
LiteRT 2.3 interpreter's reference kernels (``OpResolverType.BUILTIN_REF``)
really compute, measured against it byte for byte. Its convolutions, depthwise
convolutions and ADD requantize like ``"double"``; its int8 FULLY_CONNECTED
multiplies the accumulator by the real multiplier in IEEE double precision and
rounds half away from zero (:func:`round_by_real_multiplier`). No device runs
that, so code generation does not offer it.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

RoundingMode = Literal["double", "single"]
ROUNDING_MODES: tuple[str, ...] = ("double", "single")
#: Modes the numpy reference executor accepts: the device modes plus LiteRT's.
REFERENCE_MODES: tuple[str, ...] = ROUNDING_MODES + ("litert",)

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def tflite_round(x: float) -> float:
    """Round half away from zero (C's ``round``), as TfLiteRound does."""
    return math.copysign(math.floor(abs(x) + 0.5), x)


def quantize_multiplier(real: float, mode: RoundingMode = "double") -> tuple[int, int]:
    """Split a positive real multiplier into (int32 multiplier, shift).

    ``real == multiplier * 2**(shift - 31)`` to 31 bits. ``shift`` > 0 is a left
    shift. Mirrors TFLite's QuantizeMultiplier, including its edge cases.
    """
    if real < 0:
        raise ValueError(f"requantization multiplier must be >= 0, got {real}")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(tflite_round(q * (1 << 31)))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    if mode == "single" and shift > 30:
        shift, q_fixed = 30, (1 << 31) - 1
    return q_fixed, shift


def _as_i64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp's SaturatingRoundingDoublingHighMul on int32 values (vectorised)."""
    a = _as_i64(a)
    b = _as_i64(b)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    num = ab + nudge
    # C integer division truncates toward zero.
    q = np.where(num >= 0, num >> 31, -((-num) >> 31))
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, q).astype(np.int64)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp's RoundingDivideByPOT: divide by 2**exponent, round half away from zero."""
    x = _as_i64(x)
    exponent = _as_i64(exponent)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).astype(np.int64)
    return (x >> exponent) + (remainder > threshold).astype(np.int64)


def _wrap_i32(x: np.ndarray) -> np.ndarray:
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def multiply_by_quantized_multiplier(x, multiplier, shift, mode: RoundingMode = "double") -> np.ndarray:
    """Requantize int32 accumulators ``x`` by ``multiplier * 2**(shift - 31)``.

    ``multiplier`` and ``shift`` broadcast against ``x`` (per-channel arrays on
    the last axis work as they are). Returns int64 values in int32 range.
    """
    x = _as_i64(x)
    m = _as_i64(multiplier)
    s = _as_i64(shift)
    if mode == "double":
        left = np.maximum(s, 0)
        right = np.maximum(-s, 0)
        # The C side shifts in uint32 and wraps; mirror that exactly.
        shifted = _wrap_i32(x << left)
        return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, m), right)
    if mode == "single":
        total = 31 - s
        rnd = np.int64(1) << (total - 1)
        # int64 product plus rounding constant cannot overflow for int32 inputs.
        return _wrap_i32((x * m + rnd) >> total)
    raise ValueError(f"unknown rounding mode {mode!r}; use one of {ROUNDING_MODES}")


def round_half_away_exact(v: np.ndarray) -> np.ndarray:
    """C's ``round`` on float64 values, exactly (``floor(|v| + 0.5)`` is not: the add rounds)."""
    v = np.asarray(v, dtype=np.float64)
    t = np.trunc(v)
    frac = v - t  # exact for doubles
    return (t + np.sign(v) * (np.abs(frac) >= 0.5)).astype(np.int64)


def round_by_real_multiplier(acc, real_multiplier) -> np.ndarray:
    """``round(double(acc) * real_multiplier)``: LiteRT's reference int8 FULLY_CONNECTED.

    The product is one IEEE double multiplication (numpy's float64 is the same
    operation as C's), then C's round: half away from zero.
    """
    prod = np.asarray(acc, dtype=np.int64).astype(np.float64) * np.asarray(real_multiplier,
                                                                          dtype=np.float64)
    return round_half_away_exact(prod)


def requantize_to_int8(acc, multiplier, shift, out_zero_point: int, act_min: int, act_max: int,
                       mode: RoundingMode = "double") -> np.ndarray:
    """The common epilogue of conv / fc: requantize, add the zero point, clamp, int8."""
    y = multiply_by_quantized_multiplier(acc, multiplier, shift, mode) + int(out_zero_point)
    return np.clip(y, act_min, act_max).astype(np.int8)
