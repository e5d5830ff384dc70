"""Integer reference kernels: the definition of the right int8 answer.

One function per operator, each the numpy twin of a C kernel in
``firmware_templates/runtime/src`` and of the TFLite reference kernel named in
its docstring. Only integer arithmetic happens here (int64 holding int32
values); requantization goes through :mod:`microfit.quantize.fixedpoint`, the
twin of ``mf_fixedpoint.h``. Tests hold C and numpy byte-identical.

Conventions, shared with the C runtime:

- activations are int8 NHWC (numpy takes a batch; a C kernel takes one image);
- ``input_offset = -input_zero_point``, ``output_offset = output_zero_point``;
- ``act_min``/``act_max`` are the int8 bounds after a fused activation;
- ``padding = (top, left, bottom, right)``; taps in the padding are skipped;
- ``mode`` is the requantization rounding, ``"double"`` (TFLite Micro,
  CMSIS-NN) or ``"single"`` (TFLite built with ``TFLITE_SINGLE_ROUNDING``);
  the C side selects it with ``MF_SINGLE_ROUNDING``. (The LiteRT 2.3 wheel
  is neither throughout; tests/test_kernels.py pins what it computes.)

Keyword names match the C params struct fields, so code generation can copy
them across. Invalid parameters raise ``ValueError`` here because the C
kernels do not check them at run time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from microfit.quantize.fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    ROUNDING_MODES,
    RoundingMode,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    requantize_to_int8,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)

__all__ = [
    "output_size",
    "same_padding",
    "conv2d_s8",
    "depthwise_conv2d_s8",
    "fully_connected_s8",
    "max_pool2d_s8",
    "avg_pool2d_s8",
    "add_params",
    "add_s8",
    "softmax_params",
    "softmax_s8",
]

IntPair = int | Sequence[int]
Padding = int | Sequence[int]

# add: TFLite's int8 ADD scales both inputs by 2^20 before rescaling them.
ADD_LEFT_SHIFT_S8 = 20


# ----------------------------------------------------------------------------
# shape helpers


def output_size(in_size: int, kernel: int, stride: int = 1, dilation: int = 1,
                pad_before: int = 0, pad_after: int = 0) -> int:
    """Output length of a window op along one axis (floor mode, as TFLite/ONNX)."""
    effective = dilation * (kernel - 1) + 1
    padded = in_size + pad_before + pad_after
    if stride < 1 or dilation < 1 or kernel < 1:
        raise ValueError(f"kernel, stride and dilation must be >= 1, got {kernel}, {stride}, {dilation}")
    if padded < effective:
        raise ValueError(
            f"window of {effective} (kernel {kernel}, dilation {dilation}) does not fit "
            f"input {in_size} padded by {pad_before}+{pad_after}")
    return (padded - effective) // stride + 1


def same_padding(in_size: int, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """TFLite's SAME padding along one axis: (before, after), the extra one after."""
    effective = dilation * (kernel - 1) + 1
    out = (in_size + stride - 1) // stride
    total = max((out - 1) * stride + effective - in_size, 0)
    return total // 2, total - total // 2


# ----------------------------------------------------------------------------
# argument checking: the C kernels trust their params, so the reference does not


def _pair(name: str, v: IntPair) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    t = tuple(int(e) for e in v)
    if len(t) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {v!r}")
    return t  # type: ignore[return-value]


def _padding(v: Padding) -> tuple[int, int, int, int]:
    if isinstance(v, (int, np.integer)):
        return (int(v),) * 4  # type: ignore[return-value]
    t = tuple(int(e) for e in v)
    if len(t) == 2:  # symmetric (vertical, horizontal)
        t = (t[0], t[1], t[0], t[1])
    if len(t) != 4 or min(t) < 0:
        raise ValueError(f"padding must be (top, left, bottom, right) >= 0, got {v!r}")
    return t  # type: ignore[return-value]


def _int8(name: str, a: np.ndarray, ndim: int | None = None) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.int8:
        raise ValueError(f"{name} must be int8, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    return a


def _check_offsets(input_offset: int, output_offset: int) -> None:
    # The C kernels rely on these ranges (input + offset fits in int16).
    if not -127 <= input_offset <= 128:
        raise ValueError(f"input_offset (-zero_point) must be in [-127, 128], got {input_offset}")
    if not -128 <= output_offset <= 127:
        raise ValueError(f"output_offset (zero_point) must be in [-128, 127], got {output_offset}")


def _check_act(act_min: int, act_max: int) -> None:
    if not -128 <= act_min <= act_max <= 127:
        raise ValueError(f"need -128 <= act_min <= act_max <= 127, got [{act_min}, {act_max}]")


def _check_mode(mode: str) -> None:
    if mode not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {mode!r}; use one of {ROUNDING_MODES}")


def _per_channel(name: str, v, n: int, lo: int, hi: int) -> np.ndarray:
    a = np.asarray(v, dtype=np.int64)
    if a.ndim > 1 or (a.ndim == 1 and a.shape[0] not in (1, n)):
        raise ValueError(f"{name} must be a scalar or have {n} entries, got shape {a.shape}")
    a = np.broadcast_to(a, (n,))
    if a.size and (a.min() < lo or a.max() > hi):
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got [{a.min()}, {a.max()}]")
    return a


def _bias(bias, n: int) -> np.ndarray:
    if bias is None:
        return np.zeros(n, dtype=np.int64)
    b = np.asarray(bias)
    if b.shape != (n,) or not np.issubdtype(b.dtype, np.integer):
        raise ValueError(f"bias must be int32 of shape ({n},), got {b.dtype} {b.shape}")
    if b.size and (b.min() < INT32_MIN or b.max() > INT32_MAX):
        raise ValueError("bias values must fit in int32")
    return b.astype(np.int64)


def _check_acc(op: str, acc: np.ndarray) -> np.ndarray:
    # A C int32 accumulator would overflow (undefined behaviour): no right answer.
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise OverflowError(f"{op}: accumulator leaves int32 (range [{acc.min()}, {acc.max()}]); "
                            "the layer is too large or its bias too big for int8 arithmetic")
    return acc


# ----------------------------------------------------------------------------
# window gathering


def _pad(x: np.ndarray, pad: tuple[int, int, int, int], fill: int) -> np.ndarray:
    """(N, H, W, C) -> int64, padded with ``fill`` on top, left, bottom, right."""
    n, h, w, c = x.shape
    top, left, bottom, right = pad
    xp = np.full((n, h + top + bottom, w + left + right, c), fill, dtype=np.int64)
    xp[:, top:top + h, left:left + w, :] = x
    return xp


def _taps(xp: np.ndarray, k: tuple[int, int], stride: tuple[int, int],
          dilation: tuple[int, int], out_hw: tuple[int, int]):
    """Yield (ky, kx, view): the (N, OH, OW, C) input each output sees at kernel tap (ky, kx).

    Looping over taps, rather than gathering every window at once, keeps memory
    at the size of the input and output even for large batches.
    """
    oh, ow = out_hw
    for ky in range(k[0]):
        r0 = ky * dilation[0]
        for kx in range(k[1]):
            c0 = kx * dilation[1]
            yield ky, kx, xp[:, r0:r0 + (oh - 1) * stride[0] + 1:stride[0],
                             c0:c0 + (ow - 1) * stride[1] + 1:stride[1], :]


def _out_hw(h: int, w: int, k: tuple[int, int], stride: tuple[int, int],
            dilation: tuple[int, int], pad: tuple[int, int, int, int]) -> tuple[int, int]:
    top, left, bottom, right = pad
    return (output_size(h, k[0], stride[0], dilation[0], top, bottom),
            output_size(w, k[1], stride[1], dilation[1], left, right))


# ----------------------------------------------------------------------------
# kernels


def conv2d_s8(x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None = None, *,
              input_offset: int, output_offset: int, multiplier, shift,
              stride: IntPair = 1, dilation: IntPair = 1, padding: Padding = 0,
              act_min: int = -128, act_max: int = 127,
              mode: RoundingMode = "double") -> np.ndarray:
    """2-D convolution as TFLite's reference ConvPerChannel (int8); C: mf_conv2d_s8.

    ``x`` int8 NHWC, ``weights`` int8 OHWI (symmetric, per output channel),
    ``bias`` int32 [Cout] or None, ``multiplier``/``shift`` per output channel
    (scalars broadcast). Returns int8 NHWC.
    """
    x = _int8("x", x, 4)
    weights = _int8("weights", weights, 4)
    n, h, w, cin = x.shape
    cout, kh, kw, wcin = weights.shape
    if wcin != cin:
        raise ValueError(f"weights have {wcin} input channels, input has {cin}")
    _check_offsets(input_offset, output_offset)
    _check_act(act_min, act_max)
    _check_mode(mode)
    k = (kh, kw)
    stride, dilation, pad = _pair("stride", stride), _pair("dilation", dilation), _padding(padding)
    out_hw = _out_hw(h, w, k, stride, dilation, pad)
    m = _per_channel("multiplier", multiplier, cout, 0, INT32_MAX)
    s = _per_channel("shift", shift, cout, -31, 30)
    b = _bias(bias, cout)
    # Zero-padding after the offset is added == skipping the padded taps.
    xp = _pad(x.astype(np.int64) + input_offset, pad, fill=0)
    w64 = weights.astype(np.int64)
    acc = np.zeros((n, *out_hw, cout), dtype=np.int64)
    for ky, kx, view in _taps(xp, k, stride, dilation, out_hw):
        acc += view @ w64[:, ky, kx, :].T
    acc += b
    acc = _check_acc("conv2d_s8", acc)
    return requantize_to_int8(acc, m, s, output_offset, act_min, act_max, mode)


def depthwise_conv2d_s8(x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None = None, *,
                        input_offset: int, output_offset: int, multiplier, shift,
                        stride: IntPair = 1, dilation: IntPair = 1, padding: Padding = 0,
                        act_min: int = -128, act_max: int = 127,
                        mode: RoundingMode = "double") -> np.ndarray:
    """Depthwise convolution as TFLite's DepthwiseConvPerChannel; C: mf_depthwise_conv2d_s8.

    ``weights`` int8 [1, KH, KW, Cin * depth_multiplier] (TFLite layout);
    output channel ``ic * depth_multiplier + m`` reads input channel ``ic``.
    """
    x = _int8("x", x, 4)
    weights = _int8("weights", weights, 4)
    n, h, w, cin = x.shape
    one, kh, kw, cout = weights.shape
    if one != 1 or cout % cin:
        raise ValueError(f"depthwise weights must be [1, KH, KW, Cin*M] with Cin={cin}, "
                         f"got {weights.shape}")
    depth_multiplier = cout // cin
    _check_offsets(input_offset, output_offset)
    _check_act(act_min, act_max)
    _check_mode(mode)
    k = (kh, kw)
    stride, dilation, pad = _pair("stride", stride), _pair("dilation", dilation), _padding(padding)
    out_hw = _out_hw(h, w, k, stride, dilation, pad)
    m = _per_channel("multiplier", multiplier, cout, 0, INT32_MAX)
    s = _per_channel("shift", shift, cout, -31, 30)
    b = _bias(bias, cout)
    xp = _pad(x.astype(np.int64) + input_offset, pad, fill=0)
    xp = np.repeat(xp, depth_multiplier, axis=-1)  # channel ic*M + m holds input channel ic
    w64 = weights[0].astype(np.int64)
    acc = np.zeros((n, *out_hw, cout), dtype=np.int64)
    for ky, kx, view in _taps(xp, k, stride, dilation, out_hw):
        acc += view * w64[ky, kx]
    acc += b
    acc = _check_acc("depthwise_conv2d_s8", acc)
    return requantize_to_int8(acc, m, s, output_offset, act_min, act_max, mode)


def fully_connected_s8(x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None = None, *,
                       input_offset: int, output_offset: int, multiplier, shift,
                       act_min: int = -128, act_max: int = 127,
                       mode: RoundingMode = "double") -> np.ndarray:
    """Dense layer as TFLite's int8 FullyConnected; C: mf_fully_connected_s8.

    ``x`` int8 [..., Cin], ``weights`` int8 [Cout, Cin] (symmetric),
    per-output-channel ``multiplier``/``shift`` (a per-tensor layer passes
    scalars). Returns int8 [..., Cout].
    """
    x = _int8("x", x)
    weights = _int8("weights", weights, 2)
    cout, cin = weights.shape
    if x.ndim < 1 or x.shape[-1] != cin:
        raise ValueError(f"input's last dimension must be {cin}, got shape {x.shape}")
    _check_offsets(input_offset, output_offset)
    _check_act(act_min, act_max)
    _check_mode(mode)
    m = _per_channel("multiplier", multiplier, cout, 0, INT32_MAX)
    s = _per_channel("shift", shift, cout, -31, 30)
    b = _bias(bias, cout)
    acc = (x.astype(np.int64) + input_offset) @ weights.astype(np.int64).T + b
    acc = _check_acc("fully_connected_s8", acc)
    return requantize_to_int8(acc, m, s, output_offset, act_min, act_max, mode)


def _pool_setup(x: np.ndarray, kernel: IntPair, stride: IntPair | None, padding: Padding):
    x = _int8("x", x, 4)
    k = _pair("kernel", kernel)
    st = k if stride is None else _pair("stride", stride)
    pad = _padding(padding)
    out_hw = _out_hw(x.shape[1], x.shape[2], k, st, (1, 1), pad)
    return x, k, st, pad, out_hw


def max_pool2d_s8(x: np.ndarray, *, kernel: IntPair, stride: IntPair | None = None,
                  padding: Padding = 0, act_min: int = -128, act_max: int = 127) -> np.ndarray:
    """Max pooling as TFLite's int8 MaxPool; C: mf_max_pool2d_s8.

    Padded positions are ignored; a window entirely in the padding yields
    clamp(-128) as in TFLite. ``stride`` defaults to ``kernel``.
    """
    x, k, st, pad, out_hw = _pool_setup(x, kernel, stride, padding)
    _check_act(act_min, act_max)
    # Below any int8, so padding never wins; an all-padding window -> -128.
    mx = np.full((x.shape[0], *out_hw, x.shape[3]), -129, dtype=np.int64)
    for _, _, view in _taps(_pad(x, pad, fill=-129), k, st, (1, 1), out_hw):
        np.maximum(mx, view, out=mx)
    mx = np.maximum(mx, -128)
    return np.clip(mx, act_min, act_max).astype(np.int8)


def avg_pool2d_s8(x: np.ndarray, *, kernel: IntPair, stride: IntPair | None = None,
                  padding: Padding = 0, act_min: int = -128, act_max: int = 127) -> np.ndarray:
    """Average pooling as TFLite's int8 AveragePool; C: mf_avg_pool2d_s8.

    Only unpadded positions are summed and counted; the mean rounds half away
    from zero with C's truncating division. Global average pooling is
    ``kernel=(H, W)``. ``stride`` defaults to ``kernel``.
    """
    x, k, st, pad, out_hw = _pool_setup(x, kernel, stride, padding)
    _check_act(act_min, act_max)
    total = np.zeros((x.shape[0], *out_hw, x.shape[3]), dtype=np.int64)
    for _, _, view in _taps(_pad(x, pad, fill=0), k, st, (1, 1), out_hw):
        total += view
    # How many taps of each window fall inside the image: the same walk over a mask.
    count = np.zeros((1, *out_hw, 1), dtype=np.int64)
    inside = _pad(np.ones((1, *x.shape[1:3], 1), dtype=np.int64), pad, fill=0)
    for _, _, view in _taps(inside, k, st, (1, 1), out_hw):
        count += view
    if count.min() == 0:
        raise ValueError("avg_pool2d_s8: a window lies entirely in the padding "
                         f"(kernel {k}, padding {pad}); TFLite rejects this")
    half = count // 2
    num = np.where(total > 0, total + half, total - half)
    avg = np.sign(num) * (np.abs(num) // count)  # C division truncates toward zero
    return np.clip(avg, act_min, act_max).astype(np.int8)


def add_params(s1: float, zp1: int, s2: float, zp2: int, so: float, zpo: int,
               mode: RoundingMode = "double") -> dict[str, int]:
    """Fixed-point params of an int8 ADD from scales and zero points, as TFLite's Prepare.

    Scales are rounded to float32 first because a .tflite file stores them so.
    The keys are the fields of C's mf_add_params and the keywords of add_s8.
    """
    s1, s2, so = (float(np.float32(v)) for v in (s1, s2, so))
    if min(s1, s2, so) <= 0:
        raise ValueError(f"scales must be > 0, got {s1}, {s2}, {so}")
    twice_max_input_scale = 2.0 * max(s1, s2)
    real_in1 = s1 / twice_max_input_scale
    real_in2 = s2 / twice_max_input_scale
    real_out = twice_max_input_scale / ((1 << ADD_LEFT_SHIFT_S8) * so)
    m1, sh1 = quantize_multiplier(real_in1, mode)
    m2, sh2 = quantize_multiplier(real_in2, mode)
    mo, sho = quantize_multiplier(real_out, mode)
    if sho > 0:
        # TFLite requires a multiplier below one here (QuantizeMultiplierSmallerThanOneExp).
        raise ValueError(f"add: output scale {so} is too small for input scales {s1}, {s2} "
                         f"(real output multiplier {real_out} >= 1)")
    return {
        "input1_offset": -int(zp1), "input2_offset": -int(zp2),
        "left_shift": ADD_LEFT_SHIFT_S8,
        "input1_multiplier": m1, "input1_shift": sh1,
        "input2_multiplier": m2, "input2_shift": sh2,
        "output_multiplier": mo, "output_shift": sho,
        "output_offset": int(zpo),
    }


def add_s8(x1: np.ndarray, x2: np.ndarray, *, input1_offset: int, input2_offset: int,
           left_shift: int = ADD_LEFT_SHIFT_S8,
           input1_multiplier: int, input1_shift: int,
           input2_multiplier: int, input2_shift: int,
           output_multiplier: int, output_shift: int, output_offset: int,
           act_min: int = -128, act_max: int = 127,
           mode: RoundingMode = "double") -> np.ndarray:
    """Element-wise add as TFLite's int8 ADD (same shapes, no broadcast); C: mf_add_s8.

    Usually called as ``add_s8(a, b, **add_params(...), act_min=..., mode=...)``.
    """
    x1 = _int8("x1", x1)
    x2 = _int8("x2", x2)
    if x1.shape != x2.shape:
        raise ValueError(f"add_s8 needs equal shapes, got {x1.shape} and {x2.shape}")
    _check_offsets(input1_offset, output_offset)
    _check_offsets(input2_offset, output_offset)
    _check_act(act_min, act_max)
    _check_mode(mode)
    if not 0 <= left_shift <= 22:  # (x + offset) << left_shift must fit in int32
        raise ValueError(f"left_shift must be in [0, 22], got {left_shift}")
    for name, mult, sh in (("input1", input1_multiplier, input1_shift),
                           ("input2", input2_multiplier, input2_shift),
                           ("output", output_multiplier, output_shift)):
        if not 0 <= mult <= INT32_MAX or not -31 <= sh <= 30:
            raise ValueError(f"{name} multiplier/shift out of range: {mult}, {sh}")
    a = (x1.astype(np.int64) + input1_offset) << left_shift
    b = (x2.astype(np.int64) + input2_offset) << left_shift
    total = (multiply_by_quantized_multiplier(a, input1_multiplier, input1_shift, mode)
             + multiply_by_quantized_multiplier(b, input2_multiplier, input2_shift, mode))
    total = _check_acc("add_s8", total)
    return requantize_to_int8(total, output_multiplier, output_shift, output_offset,
                              act_min, act_max, mode)


# ----------------------------------------------------------------------------
# softmax: gemmlowp-style fixed point, twin of softmax_s8.c

SOFTMAX_SCALED_DIFF_INT_BITS = 5  # input differences in Q5.26
SOFTMAX_ACCUM_INT_BITS = 12  # sum of exps in Q12.19
SOFTMAX_MAX_DEPTH = 4095  # more and the Q12.19 sum could overflow

# exp(-2^k) for k = -2 .. 4 in Q0.31; tests recompute them from math.exp.
_EXP_MINUS_POW2 = (1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242)
_EXP_MINUS_ONE_EIGHTH = 1895147668  # exp(-1/8), Q0.31
_ONE_THIRD = 715827883  # 1/3, Q0.31
_FORTY_EIGHT_17THS = 1515870810  # 48/17, Q2.29
_MINUS_THIRTY_TWO_17THS = -1010580540  # -32/17, Q2.29


def _mul(a, b) -> np.ndarray:
    return saturating_rounding_doubling_high_mul(a, b)


def _sat_shift_left(x: np.ndarray, exponent: int) -> np.ndarray:
    limit = (1 << (31 - exponent)) - 1
    return np.where(x > limit, INT32_MAX, np.where(x < -limit, INT32_MIN, x << exponent))


def _exp_on_quarter_interval(a: np.ndarray) -> np.ndarray:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out: Taylor polynomial around -1/8."""
    x = a + (1 << 28)
    x2 = _mul(x, x)
    x3 = _mul(x2, x)
    x4 = _mul(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(_mul(x4_over_4 + x3, _ONE_THIRD) + x2, 1)
    return _EXP_MINUS_ONE_EIGHTH + _mul(_EXP_MINUS_ONE_EIGHTH, x + poly)


def _exp_on_negative_values(a: np.ndarray) -> np.ndarray:
    """exp(a) for a <= 0, a in Q5.26, result in Q0.31."""
    frac_bits = 31 - SOFTMAX_SCALED_DIFF_INT_BITS
    quarter = 1 << (frac_bits - 2)
    r = (a & (quarter - 1)) - quarter  # a = r - q, r in [-1/4, 0), q a multiple of 1/4
    q = r - a
    result = _exp_on_quarter_interval(_sat_shift_left(r, SOFTMAX_SCALED_DIFF_INT_BITS))
    for k, factor in enumerate(_EXP_MINUS_POW2):
        result = np.where(q & (1 << (frac_bits - 2 + k)), _mul(result, factor), result)
    return np.where(a == 0, INT32_MAX, result)


def _bit_length(x: np.ndarray) -> np.ndarray:
    """Bits needed for each non-negative value (binary search, integers only)."""
    n = np.zeros_like(x)
    v = x.copy()
    for s in (16, 8, 4, 2, 1):
        big = v >= (1 << s)
        n += np.where(big, s, 0)
        v = np.where(big, v >> s, v)
    return n + (v > 0)


def _one_over_one_plus_x(a: np.ndarray) -> np.ndarray:
    """1 / (1 + a) for a in [0, 1), Q0.31: three Newton-Raphson steps in Q2.29."""
    total = a + INT32_MAX
    half_denominator = np.where(total >= 0, (total + 1) // 2, -((-total + 1) // 2))
    x = _FORTY_EIGHT_17THS + _mul(half_denominator, _MINUS_THIRTY_TWO_17THS)
    for _ in range(3):
        error = (1 << 29) - _mul(half_denominator, x)
        x = x + _sat_shift_left(_mul(x, error), 2)
    return _sat_shift_left(x, 1)


def softmax_params(input_scale: float, beta: float = 1.0,
                   mode: RoundingMode = "double") -> dict[str, int]:
    """Fixed-point params of an int8 softmax from beta and the input scale, as TFLite's Prepare.

    Keys are the fields of C's mf_softmax_params (less rows/depth) and the
    keywords of softmax_s8. beta and the scale are rounded to float32 first,
    as a .tflite file stores them.
    """
    _check_mode(mode)
    scale, beta = float(np.float32(input_scale)), float(np.float32(beta))
    if scale <= 0 or beta <= 0:
        raise ValueError(f"softmax needs input scale > 0 and beta > 0, got {scale}, {beta}")
    # Single rounding keeps the left shift <= 30; double allows 31.
    max_real = (1 << 30) - 1.0 if mode == "single" else (1 << 31) - 1.0
    real = min(beta * scale * (1 << (31 - SOFTMAX_SCALED_DIFF_INT_BITS)), max_real)
    multiplier, left_shift = quantize_multiplier(real, mode)
    if left_shift < 0:
        raise ValueError(f"softmax: beta * input_scale = {beta * scale} is too small "
                         "(TFLite needs beta * scale * 2^26 >= 0.5)")
    max_rescaled = ((1 << SOFTMAX_SCALED_DIFF_INT_BITS) - 1) * \
        (1 << (31 - SOFTMAX_SCALED_DIFF_INT_BITS)) / (1 << left_shift)
    return {"input_multiplier": multiplier, "input_left_shift": left_shift,
            "diff_min": -int(np.floor(max_rescaled))}


def softmax_s8(x: np.ndarray, *, input_multiplier: int, input_left_shift: int, diff_min: int,
               mode: RoundingMode = "double") -> np.ndarray:
    """Softmax over the last axis as TFLite's reference int8 Softmax; C: mf_softmax_s8.

    Output scale is 1/256 and zero point -128, as TFLite requires. Usually
    called as ``softmax_s8(x, **softmax_params(scale, beta, mode), mode=mode)``.
    """
    x = _int8("x", x)
    _check_mode(mode)
    if x.ndim < 1 or not 1 <= x.shape[-1] <= SOFTMAX_MAX_DEPTH:
        raise ValueError(f"softmax depth must be in [1, {SOFTMAX_MAX_DEPTH}], got shape {x.shape}")
    if not 0 <= input_multiplier <= INT32_MAX or not 0 <= input_left_shift <= 31 or diff_min > 0:
        raise ValueError(f"softmax params out of range: {input_multiplier}, {input_left_shift}, "
                         f"{diff_min}")
    diff = x.astype(np.int64) - x.max(axis=-1, keepdims=True)
    counted = diff >= diff_min
    # Differences below diff_min are never rescaled (they could overflow).
    scaled = multiply_by_quantized_multiplier(np.where(counted, diff, 0), input_multiplier,
                                              input_left_shift, mode)
    exps = _exp_on_negative_values(scaled)
    total = np.where(counted, rounding_divide_by_pot(exps, SOFTMAX_ACCUM_INT_BITS), 0).sum(
        axis=-1, keepdims=True)
    headroom = 32 - _bit_length(total)
    bits_over_unit = SOFTMAX_ACCUM_INT_BITS - headroom
    shifted = ((total << headroom) & 0xFFFFFFFF) - (1 << 31)
    reciprocal = _one_over_one_plus_x(shifted)
    prob = _mul(reciprocal, exps)
    exponent = np.broadcast_to(bits_over_unit + 31 - 8, prob.shape)
    # Past a shift of 31 every probability rounds to 0 (the C kernel says why).
    q = np.where(exponent > 31, 0, rounding_divide_by_pot(prob, np.minimum(exponent, 31)))
    return np.where(counted, np.clip(q - 128, -128, 127), -128).astype(np.int8)



# ----------------------------------------------------------------------------
# concatenation and slicing: byte copies (issue 4; C: concatenation_s8.c, slice_s8.c)


def concatenation_s8(xs: Sequence[np.ndarray], axis: int) -> np.ndarray:
    """Concatenation as TFLite's int8 CONCATENATION; C: mf_concatenation_s8.

    TFLite's int8 kernels (TFLite Micro and LiteRT alike) reject inputs whose
    scale or zero point differ from the output's, so the op is a pure copy:
    the quantizer gives every input and the output one set of parameters.
    ``axis`` is an index into the (batched) arrays' shape, >= 1.
    """
    xs = [_int8(f"input {i}", x) for i, x in enumerate(xs)]
    if not xs:
        raise ValueError("concatenation_s8 needs at least one input")
    rank = xs[0].ndim
    if not 1 <= axis < rank:
        raise ValueError(f"concatenation axis must be in [1, {rank - 1}], got {axis}")
    for i, x in enumerate(xs):
        if x.ndim != rank or x.shape[:axis] != xs[0].shape[:axis] or \
                x.shape[axis + 1:] != xs[0].shape[axis + 1:]:
            raise ValueError(f"input {i} has shape {x.shape}, incompatible with {xs[0].shape} "
                             f"outside axis {axis}")
    return np.concatenate(xs, axis=axis)


def slice_s8(x: np.ndarray, axis: int, begin: int, size: int) -> np.ndarray:
    """``size`` entries from ``begin`` along one axis, as TFLite's SLICE; C: mf_slice_s8.

    A copy: TFLite's converter gives SLICE (and SPLIT / SPLIT_V) outputs their
    input's quantization. ``axis`` indexes the batched array's shape, >= 1.
    """
    x = _int8("x", x)
    if not 1 <= axis < x.ndim:
        raise ValueError(f"slice axis must be in [1, {x.ndim - 1}], got {axis}")
    if begin < 0 or size < 1 or begin + size > x.shape[axis]:
        raise ValueError(f"slice [{begin}, {begin + size}) leaves axis {axis} of shape {x.shape}")
    index = [slice(None)] * x.ndim
    index[axis] = slice(begin, begin + size)
    return np.ascontiguousarray(x[tuple(index)])


# ----------------------------------------------------------------------------
# LOGISTIC and TANH (int8 -> int8 through a 256-entry table; C: lut_s8.c) and
# PAD (C: pad_s8.c)
#
# An elementwise int8 op has only 256 possible inputs, so its whole behaviour
# is a table: the reference builds it once per node (what TFLite computes in
# Prepare plus what its Eval computes for every input value), the C kernel
# looks bytes up in it. Which table depends on the interpreter:
#
# - "double" / "single": TFLite Micro's reference_integer_ops::Logistic/Tanh.
#   The input, minus its zero point, is rescaled into Q4.27 by a multiplier of
#   ``float(scale) * 2^27`` (frexp + round, no QuantizeMultiplier clamping) with
#   MultiplyByQuantizedMultiplier (the mode's rounding), then gemmlowp's
#   fixed-point logistic / tanh, then a rounding shift to the fixed output
#   quantization. Inputs at or beyond the "input range radius" saturate.
# - "litert": LiteRT's reference kernels fill the table in Prepare from float32
#   arithmetic (LUTPopulate: dequantize in float32, 1 / (1 + expf(-x)) or
#   tanhf, round half away from zero). See :func:`_float_lut`.

LUT_INPUT_INTEGER_BITS = 4  # LOGISTIC and TANH rescale the input into Q4.27
LUT_OPS = ("LOGISTIC", "TANH")
#: TFLite's fixed int8 output quantization: (scale, zero_point).
LUT_OUTPUT_QUANT = {"LOGISTIC": (1.0 / 256.0, -128), "TANH": (1.0 / 128.0, 0)}


def _exp_on_negative_values_bits(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp's exp_on_negative_values for a Q(integer_bits).(31-integer_bits) input, Q0.31 out.

    The barrel shifter applies exp(-2^k) only for k < integer_bits (so 4 integer
    bits stop at exp(-8)); _exp_on_negative_values is the 5-bit case.
    """
    frac_bits = 31 - integer_bits
    quarter = 1 << (frac_bits - 2)
    r = (a & (quarter - 1)) - quarter
    q = r - a
    result = _exp_on_quarter_interval(_sat_shift_left(r, integer_bits))
    for k, factor in enumerate(_EXP_MINUS_POW2):
        if integer_bits > k - 2:
            result = np.where(q & (1 << (frac_bits - 2 + k)), _mul(result, factor), result)
    return np.where(a == 0, INT32_MAX, result)


def _rounding_half_sum(a: np.ndarray, b: int) -> np.ndarray:
    total = a + b
    return np.where(total >= 0, (total + 1) // 2, -((-total + 1) // 2))


def _one_minus_x_over_one_plus_x(a: np.ndarray) -> np.ndarray:
    """(1 - a) / (1 + a) for a in [0, 1], Q0.31: gemmlowp's Newton-Raphson in Q2.29."""
    half_denominator = _rounding_half_sum(a, INT32_MAX)
    x = _FORTY_EIGHT_17THS + _mul(half_denominator, _MINUS_THIRTY_TWO_17THS)
    for _ in range(3):
        error = (1 << 29) - _mul(half_denominator, x)
        x = x + _sat_shift_left(_mul(x, error), 2)
    return _sat_shift_left(x - (1 << 29), 2)


def fixed_point_logistic(a) -> np.ndarray:
    """gemmlowp's logistic of Q4.27 raw values, Q0.31 raw results (vectorised)."""
    a = np.asarray(a, dtype=np.int64)
    positive = a > 0
    magnitude = np.where(positive, a, -a)
    exp_neg = _exp_on_negative_values_bits(-magnitude, LUT_INPUT_INTEGER_BITS)
    if_positive = _one_over_one_plus_x(exp_neg)
    result = np.where(positive, if_positive, INT32_MAX - if_positive)
    return np.where(a == 0, 1 << 30, result)


def fixed_point_tanh(a) -> np.ndarray:
    """gemmlowp's tanh of Q4.27 raw values, Q0.31 raw results (vectorised).

    tanh(|a|) = (1 - exp(-2|a|)) / (1 + exp(-2|a|)); the doubling is a change of
    format (the same raw value read as Q5.26), so exp runs with 5 integer bits.
    """
    a = np.asarray(a, dtype=np.int64)
    negative = a < 0
    n = np.where(negative, a, -a)  # -|a|
    t = _one_minus_x_over_one_plus_x(_exp_on_negative_values_bits(n, LUT_INPUT_INTEGER_BITS + 1))
    return np.where(a == 0, 0, np.where(negative, -t, t))


def lut_input_params(input_scale: float) -> dict[str, int]:
    """TFLite Micro's Prepare of int8 LOGISTIC / TANH: Q4.27 input multiplier, shift, radius.

    The multiplier is ``frexp(float32(scale) * 2^27)`` rounded to 31 bits (exact:
    a float32 mantissa has 24 bits). ``input_range_radius`` is the largest
    ``|input - zero_point|`` that does not saturate the rescaled input.
    """
    import math

    scale = float(np.float32(input_scale))
    if not scale > 0:
        raise ValueError(f"LOGISTIC/TANH need an input scale > 0, got {input_scale}")
    q, shift = math.frexp(scale * (1 << (31 - LUT_INPUT_INTEGER_BITS)))
    if shift < 0:
        raise ValueError(f"LOGISTIC/TANH input scale {scale} is below 2^-28; TFLite's fixed-point "
                         "rescaling cannot represent it (requantize the input to a coarser scale)")
    multiplier = int(tflite_round_half_away(q * (1 << 31)))
    max_rescaled = ((1 << LUT_INPUT_INTEGER_BITS) - 1) << (31 - LUT_INPUT_INTEGER_BITS)
    return {"input_multiplier": multiplier, "input_left_shift": shift,
            "input_range_radius": max_rescaled >> shift}


def tflite_round_half_away(v: float) -> float:
    """C's round() on a double: half away from zero."""
    import math

    return math.copysign(math.floor(abs(v) + 0.5), v)


_LIBM: dict[str, object] = {}


def _libm_float32(name: str):
    """The C library's float32 function ``name`` (expf, tanhf) through ctypes, or None."""
    if name not in _LIBM:
        import ctypes
        import ctypes.util

        fn = None
        path = ctypes.util.find_library("m")
        if path is not None:
            try:
                fn = getattr(ctypes.CDLL(path), name)
                fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
            except (OSError, AttributeError):
                fn = None
        _LIBM[name] = fn
    return _LIBM[name]


def _float_lut(op: str, input_scale: float, input_zero_point: int) -> np.ndarray:
    """LiteRT's LUTPopulate<int8_t> for LOGISTIC / TANH, in float32 as its Prepare computes.

    LiteRT calls the C library's ``expf`` / ``tanhf`` (glibc's on Linux, which
    are not always correctly rounded: tanhf is off by one ulp now and then,
    and an output then lands on the other side of a rounding tie), so this
    calls the same functions through ctypes. Where no C math library can be
    loaded, correctly rounded float32 values stand in.
    """
    out_scale, out_zp = LUT_OUTPUT_QUANT[op]
    v = np.arange(-128, 128, dtype=np.int64)
    deq = np.float32(input_scale) * (v - int(input_zero_point)).astype(np.float32)
    fn = _libm_float32("expf" if op == "LOGISTIC" else "tanhf")
    arg = -deq if op == "LOGISTIC" else deq
    with np.errstate(over="ignore"):
        if fn is not None:
            f = np.array([fn(float(a)) for a in arg], dtype=np.float32)
        else:
            f = (np.exp(arg.astype(np.float64)) if op == "LOGISTIC"
                 else np.tanh(arg.astype(np.float64))).astype(np.float32)
    y = np.float32(1.0) / (np.float32(1.0) + f) if op == "LOGISTIC" else f
    inverse = np.float32(1.0) / np.float32(out_scale)
    r = (y * inverse).astype(np.float64)
    q = np.sign(r) * np.floor(np.abs(r) + 0.5) + out_zp
    return np.clip(q, -128, 127).astype(np.int8)


def lut_table(op: str, input_scale: float, input_zero_point: int,
              mode: str = "double") -> np.ndarray:
    """The 256 int8 outputs of an int8 LOGISTIC or TANH, indexed by ``input + 128``.

    ``mode`` is ``"double"`` or ``"single"`` (TFLite Micro's fixed point with that
    requantization rounding) or ``"litert"`` (LiteRT's float-built table).
    """
    if op not in LUT_OPS:
        raise ValueError(f"lut_table builds LOGISTIC or TANH tables, not {op!r}")
    if not -128 <= int(input_zero_point) <= 127:
        raise ValueError(f"input zero point must be int8, got {input_zero_point}")
    if mode == "litert":
        return _float_lut(op, input_scale, input_zero_point)
    _check_mode(mode)
    p = lut_input_params(input_scale)
    if mode == "single" and p["input_left_shift"] > 30:
        raise ValueError(f"LOGISTIC/TANH input scale {input_scale} is too large for single "
                         "rounding (shift > 30); TFLite's single-rounding multiply rejects it")
    x = np.arange(-128, 128, dtype=np.int64) - int(input_zero_point)
    radius = p["input_range_radius"]
    inside = (x > -radius) & (x < radius)
    rescaled = multiply_by_quantized_multiplier(np.where(inside, x, 0), p["input_multiplier"],
                                                p["input_left_shift"], mode)
    if op == "LOGISTIC":
        y = rounding_divide_by_pot(fixed_point_logistic(rescaled), 31 - 8) - 128
    else:
        y = rounding_divide_by_pot(fixed_point_tanh(rescaled), 31 - 7)
    y = np.where(inside, y, np.where(x > 0, 127, -128))
    return np.clip(y, -128, 127).astype(np.int8)


def lut_s8(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``table[x + 128]`` for every int8 ``x``; C: mf_lut_s8 (LOGISTIC, TANH)."""
    x = _int8("x", x)
    table = np.asarray(table)
    if table.shape != (256,) or table.dtype != np.int8:
        raise ValueError(f"table must be int8 of shape (256,), got {table.dtype} {table.shape}")
    return table[x.astype(np.int64) + 128]


def pad_s8(x: np.ndarray, paddings: Sequence[Sequence[int]], fill: int) -> np.ndarray:
    """Constant padding as TFLite's int8 PAD / PADV2; C: mf_pad_s8.

    ``paddings`` holds (before, after) per axis of the batched array, the batch
    axis unpadded; ``fill`` is the input zero point (a real 0), or PADV2's value.
    """
    x = _int8("x", x)
    pads = [tuple(int(v) for v in p) for p in paddings]
    if len(pads) != x.ndim or any(len(p) != 2 for p in pads):
        raise ValueError(f"paddings must give (before, after) for each of {x.ndim} axes, got "
                         f"{paddings!r}")
    if any(v < 0 for p in pads for v in p):
        raise ValueError(f"paddings must be >= 0, got {pads}")
    if pads[0] != (0, 0):
        raise ValueError(f"the batch axis cannot be padded, got {pads[0]}")
    if not -128 <= int(fill) <= 127:
        raise ValueError(f"fill must be an int8 value, got {fill}")
    return np.pad(x, pads, constant_values=np.int8(fill))
