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

