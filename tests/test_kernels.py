"""C runtime kernels == numpy integer reference, byte for byte, under ASan+UBSan.

Hundreds of random cases per kernel (odd shapes, strides, dilations,
asymmetric padding, zero points, per-channel multipliers, activation ranges)
go through one sanitized C driver per rounding mode (tests/c/kernel_driver.c)
and are compared with microfit.reference.ops. Every array the driver hands a
kernel is its own exactly sized heap block, so an out-of-bounds access fails
the run. Further down: the runtime compiled for Cortex-M4 and ATmega328P, the
kernels run on an emulated ATmega328P (simavr) with constants in flash, and
the reference checked against TFLite Micro's and LiteRT's own interpreters on
one-op .tflite models. Each part skips, naming the package, when its tool is
missing.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from microfit.codegen import layouts
from microfit.errors import BuildError, ToolchainMissingError
from microfit.quantize.fixedpoint import (
    INT32_MAX,
    ROUNDING_MODES,
    quantize_multiplier,
    round_by_real_multiplier,
    tflite_round,
)
from microfit.reference import ops
from microfit.toolchain.host import compile_host, runtime_dir, runtime_sources

DRIVER_SRC = Path(__file__).parent / "c" / "kernel_driver.c"
N_CASES = 300

OP_CONV2D, OP_DWCONV2D, OP_FC, OP_MAXPOOL, OP_AVGPOOL, OP_ADD, OP_ADD_IN_PLACE, OP_SOFTMAX = range(1, 9)
OP_CONV2D_FAST, OP_ADD_FAST, OP_ADD_FAST_IN_PLACE, OP_DWCONV2D_FAST, OP_CONV2D_AVR = 9, 10, 11, 12, 13


# --------------------------------------------------------------------------
# the driver


@dataclass
class Case:
    """One kernel call: what the driver gets, and how the reference answers it."""

    op: int
    params: list[int]
    arrays: list[np.ndarray | None]
    reference: Callable[[str], np.ndarray]  # mode -> int8 output of microfit.reference.ops
    info: dict = field(default_factory=dict)
    only_mode: str | None = None  # params valid in one rounding mode only

    def expected(self, mode: str) -> np.ndarray:
        return np.ascontiguousarray(self.reference(mode), dtype=np.int8).ravel()

    @property
    def bounds(self) -> tuple[int, int]:
        """The output range: the activation range, the int8 range for softmax."""
        if self.op in (OP_CONV2D_FAST, OP_CONV2D_AVR):
            return self.params[16], self.params[17]
        return (-128, 127) if self.op == OP_SOFTMAX else (self.params[-2], self.params[-1])


def _pack(cases: list[Case], out_sizes: list[int]) -> bytes:
    parts = []
    for case, out_size in zip(cases, out_sizes, strict=True):
        words = [case.op, len(case.params), *case.params, len(case.arrays)]
        parts.append(struct.pack(f"<{len(words)}i", *words))
        for a in case.arrays:
            if a is None:
                parts.append(struct.pack("<i", -1))
                continue
            data = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
            parts.append(struct.pack("<i", len(data)))
            parts.append(data)
        parts.append(struct.pack("<i", out_size))
    return b"".join(parts)


def _run_raw(driver: Path, blob: bytes) -> subprocess.CompletedProcess:
    return subprocess.run([str(driver)], input=blob, capture_output=True, timeout=300,
                          env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})


def run_driver(driver: Path, cases: list[Case], out_sizes: list[int]) -> list[np.ndarray]:
    """Run every case through the C driver; return each case's output bytes as int8."""
    proc = _run_raw(driver, _pack(cases, out_sizes))
    assert proc.returncode == 0, (f"driver failed (exit {proc.returncode}):\n"
                                  f"{proc.stderr.decode(errors='replace')[-4000:]}")
    assert len(proc.stdout) == sum(out_sizes), "driver wrote the wrong number of bytes"
    out = np.frombuffer(proc.stdout, dtype=np.int8)
    return np.split(out, np.cumsum(out_sizes)[:-1])


@pytest.fixture(scope="module")
def kernel_driver(tmp_path_factory) -> Callable[..., Path]:
    """The sanitized driver for a rounding mode, built once per module and mode.

    ``simd=True`` builds the fast kernels' DSP code with portable emulations
    of the instructions (MF_SIMD_EMULATE); otherwise they take their plain
    multiply-accumulate loops, as on a Cortex-M0/M3.
    """
    built: dict[tuple[str, bool], Path] = {}

    def get(mode: str, simd: bool = False) -> Path:
        if (mode, simd) not in built:
            out = tmp_path_factory.mktemp("kernels") / f"kernel_driver_{mode}{'_simd' * simd}"
            defines = {"MF_SINGLE_ROUNDING": "1"} if mode == "single" else {}
            if simd:
                defines["MF_SIMD_EMULATE"] = "1"
            try:
                built[mode, simd] = compile_host([DRIVER_SRC, *runtime_sources()], out,
                                                 [runtime_dir() / "include"], defines=defines,
                                                 extra_flags=("-pedantic",))
            except ToolchainMissingError as exc:
                pytest.skip(str(exc))
        return built[mode, simd]

    return get


# --------------------------------------------------------------------------
# random cases


def _s8(rng: np.random.Generator, shape, lo: int = -128) -> np.ndarray:
    return rng.integers(lo, 128, size=shape).astype(np.int8)


def _zero_points(rng: np.random.Generator) -> tuple[int, int]:
    """(input_offset, output_offset), now and then at the ends of the range."""
    zin, zout = (int(rng.choice([-128, 127, 0])) if rng.random() < 0.15 else int(rng.integers(-128, 128))
                 for _ in range(2))
    return -zin, zout


def _act_range(rng: np.random.Generator, output_offset: int) -> tuple[int, int]:
    r = rng.random()
    if r < 0.4:
        return -128, 127
    if r < 0.65:  # ReLU
        return output_offset, 127
    if r < 0.75:  # ReLU6-like
        return output_offset, int(min(127, output_offset + rng.integers(1, 160)))
    if r < 0.85:  # degenerate and narrow ranges
        lo = int(rng.integers(-128, 128))
        return lo, int(rng.integers(lo, min(lo + 8, 127) + 1))
    lo = int(rng.integers(-128, 64))
    return lo, int(rng.integers(lo + 16, 128))


def _requant(rng: np.random.Generator, n: int, dot_rms: float,
             bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel multiplier/shift spreading accumulators over int8, plus odd extremes."""
    acc_rms = float(np.hypot(dot_rms, _rms(bias) if bias is not None else 0.0))
    per_tensor = rng.random() < 0.2
    mult, shift = [], []
    for _ in range(n):
        if per_tensor and mult:
            mult.append(mult[0])
            shift.append(shift[0])
        elif rng.random() < 0.06:  # anything the kernels accept
            mult.append(int(rng.integers(0, INT32_MAX, endpoint=True)))
            shift.append(int(rng.integers(-31, 31)))
        else:
            real = 40.0 / max(acc_rms, 1.0) * 2.0 ** rng.uniform(-1.5, 1.5)
            m, s = quantize_multiplier(real)
            mult.append(m)
            shift.append(s)
    return np.array(mult, dtype=np.int32), np.array(shift, dtype=np.int32)


def _bias(rng: np.random.Generator, n: int) -> np.ndarray | None:
    if rng.random() < 0.2:
        return None
    bits = int(rng.integers(4, 21))
    return rng.integers(-(1 << bits), 1 << bits, size=n).astype(np.int32)


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a.astype(np.float64))))) if a.size else 0.0


def _window_geometry(rng: np.random.Generator, max_k: int, allow_dilation: bool,
                     max_pad: Callable[[int], int]):
    """Random input size, kernel, stride, dilation, padding that give >= 1 output."""
    while True:
        h, w = (int(v) for v in rng.integers(1, 13, 2))
        kh, kw = (int(v) for v in rng.integers(1, max_k + 1, 2))
        sh, sw = (int(v) for v in rng.integers(1, 4, 2))
        dh, dw = (int(v) for v in rng.integers(1, 3, 2)) if allow_dilation else (1, 1)
        if rng.random() < 0.3:
            top, bottom = ops.same_padding(h, kh, sh, dh)
            left, right = ops.same_padding(w, kw, sw, dw)
        else:
            top, bottom = (int(rng.integers(0, max_pad(kh) + 1)) for _ in range(2))
            left, right = (int(rng.integers(0, max_pad(kw) + 1)) for _ in range(2))
        try:
            oh = ops.output_size(h, kh, sh, dh, top, bottom)
            ow = ops.output_size(w, kw, sw, dw, left, right)
        except ValueError:
            continue
        return h, w, (kh, kw), (sh, sw), (dh, dw), (top, left, bottom, right), (oh, ow)


def conv2d_case(rng: np.random.Generator) -> Case:
    h, w, k, st, dil, pad, (oh, ow) = _window_geometry(rng, 5, True, lambda k: 3)
    cin, cout = (int(v) for v in rng.integers(1, 9, 2))
    x = _s8(rng, (1, h, w, cin))
    wt = _s8(rng, (cout, *k, cin), lo=-128 if rng.random() < 0.2 else -127)
    bias = _bias(rng, cout)
    in_off, out_off = _zero_points(rng)
    act = _act_range(rng, out_off)
    acc_rms = np.sqrt(k[0] * k[1] * cin) * _rms(x.astype(np.int32) + in_off) * _rms(wt)
    mult, shift = _requant(rng, cout, acc_rms, bias)
    kw = dict(input_offset=in_off, output_offset=out_off, multiplier=mult, shift=shift,
              stride=st, dilation=dil, padding=pad, act_min=act[0], act_max=act[1])
    params = [h, w, cin, oh, ow, cout, *k, *st, *dil, pad[0], pad[1], in_off, out_off, *act]
    return Case(OP_CONV2D, params, [x, wt, bias, mult, shift],
                lambda mode: ops.conv2d_s8(x, wt, bias, mode=mode, **kw), info=kw)


def depthwise_conv2d_case(rng: np.random.Generator) -> Case:
    h, w, k, st, dil, pad, (oh, ow) = _window_geometry(rng, 5, True, lambda k: 3)
    cin, dm = int(rng.integers(1, 9)), int(rng.integers(1, 4))
    x = _s8(rng, (1, h, w, cin))
    wt = _s8(rng, (1, *k, cin * dm), lo=-128 if rng.random() < 0.2 else -127)
    bias = _bias(rng, cin * dm)
    in_off, out_off = _zero_points(rng)
    act = _act_range(rng, out_off)
    acc_rms = np.sqrt(k[0] * k[1]) * _rms(x.astype(np.int32) + in_off) * _rms(wt)
    mult, shift = _requant(rng, cin * dm, acc_rms, bias)
    kw = dict(input_offset=in_off, output_offset=out_off, multiplier=mult, shift=shift,
              stride=st, dilation=dil, padding=pad, act_min=act[0], act_max=act[1])
    params = [h, w, cin, oh, ow, dm, *k, *st, *dil, pad[0], pad[1], in_off, out_off, *act]
    return Case(OP_DWCONV2D, params, [x, wt, bias, mult, shift],
                lambda mode: ops.depthwise_conv2d_s8(x, wt, bias, mode=mode, **kw), info=kw)


def depthwise_conv2d_3x3_case(rng: np.random.Generator) -> Case:
    """3x3 depthwise layers, as in MobileNet and DS-CNN: the fast kernel's unrolled path
    (assembly on Cortex-M4), with borders, strides, dilations and channel remainders."""
    while True:
        h, w = (int(v) for v in rng.integers(1, 14, 2))
        sh, sw = (int(v) for v in rng.integers(1, 3, 2))
        dh, dw = (1, 1) if rng.random() < 0.7 else (int(v) for v in rng.integers(1, 3, 2))
        if rng.random() < 0.6:
            top, bottom = ops.same_padding(h, 3, sh, dh)
            left, right = ops.same_padding(w, 3, sw, dw)
        else:
            top, bottom, left, right = (int(v) for v in rng.integers(0, 3, 4))
        try:
            oh = ops.output_size(h, 3, sh, dh, top, bottom)
            ow = ops.output_size(w, 3, sw, dw, left, right)
        except ValueError:
            continue
        break
    cin = int(rng.integers(1, 21))
    x = _s8(rng, (1, h, w, cin))
    wt = _s8(rng, (1, 3, 3, cin), lo=-128 if rng.random() < 0.2 else -127)
    bias = _bias(rng, cin)
    in_off, out_off = _zero_points(rng)
    act = _act_range(rng, out_off)
    mult, shift = _requant(rng, cin, 3 * _rms(x.astype(np.int32) + in_off) * _rms(wt), bias)
    kw = dict(input_offset=in_off, output_offset=out_off, multiplier=mult, shift=shift,
              stride=(sh, sw), dilation=(dh, dw), padding=(top, left, bottom, right),
              act_min=act[0], act_max=act[1])
    params = [h, w, cin, oh, ow, 1, 3, 3, sh, sw, dh, dw, top, left, in_off, out_off, *act]
    return Case(OP_DWCONV2D, params, [x, wt, bias, mult, shift],
                lambda mode: ops.depthwise_conv2d_s8(x, wt, bias, mode=mode, **kw), info=kw)


def fully_connected_case(rng: np.random.Generator) -> Case:
    cin = int(rng.integers(1, 301)) if rng.random() < 0.8 else int(rng.integers(1, 9))
    cout = int(rng.integers(1, 25))
    x = _s8(rng, (1, cin))
    wt = _s8(rng, (cout, cin), lo=-128 if rng.random() < 0.2 else -127)
    bias = _bias(rng, cout)
    in_off, out_off = _zero_points(rng)
    act = _act_range(rng, out_off)
    mult, shift = _requant(rng, cout, np.sqrt(cin) * _rms(x.astype(np.int32) + in_off) * _rms(wt),
                           bias)
    kw = dict(input_offset=in_off, output_offset=out_off, multiplier=mult, shift=shift,
              act_min=act[0], act_max=act[1])
    params = [cin, cout, in_off, out_off, *act]
    return Case(OP_FC, params, [x, wt, bias, mult, shift],
                lambda mode: ops.fully_connected_s8(x, wt, bias, mode=mode, **kw), info=kw)


def _pool_case(rng: np.random.Generator, op: int) -> Case:
    is_max = op == OP_MAXPOOL
    while True:
        if not is_max and rng.random() < 0.15:  # global average pooling
            h, w = (int(v) for v in rng.integers(1, 13, 2))
            k, st, pad, (oh, ow) = (h, w), (1, 1), (0, 0, 0, 0), (1, 1)
        else:
            # Max pool may pad by a whole window (an empty window -> clamp(-128));
            # average pooling rejects that, so its padding stays below the window.
            h, w, k, st, _, pad, (oh, ow) = _window_geometry(
                rng, 4, False, (lambda k: k) if is_max else (lambda k: k - 1))
        c = int(rng.integers(1, 11))
        x = _s8(rng, (1, h, w, c))
        act = _act_range(rng, int(rng.integers(-128, 128)))
        kw = dict(kernel=k, stride=st, padding=pad, act_min=act[0], act_max=act[1])
        try:
            (ops.max_pool2d_s8 if is_max else ops.avg_pool2d_s8)(x, **kw)
        except ValueError:  # an all-padding window under SAME-like padding: draw again
            continue
        break
    fn = ops.max_pool2d_s8 if is_max else ops.avg_pool2d_s8
    params = [h, w, c, oh, ow, *k, *st, pad[0], pad[1], *act]
    return Case(op, params, [x], lambda mode: fn(x, **kw), info=kw)


def max_pool2d_case(rng: np.random.Generator) -> Case:
    return _pool_case(rng, OP_MAXPOOL)


def avg_pool2d_case(rng: np.random.Generator) -> Case:
    return _pool_case(rng, OP_AVGPOOL)


def add_case(rng: np.random.Generator) -> Case:
    size = int(rng.integers(1, 401))
    x1, x2 = _s8(rng, (size,)), _s8(rng, (size,))
    while True:
        if rng.random() < 0.1:  # raw params at the edges of what the kernel accepts
            p = dict(input1_offset=int(rng.integers(-127, 129)), input2_offset=int(rng.integers(-127, 129)),
                     left_shift=20,
                     input1_multiplier=int(rng.integers(1 << 30, INT32_MAX)), input1_shift=int(rng.integers(-31, 1)),
                     input2_multiplier=int(rng.integers(1 << 30, INT32_MAX)), input2_shift=int(rng.integers(-31, 1)),
                     output_multiplier=int(rng.integers(1 << 30, INT32_MAX)), output_shift=int(rng.integers(-31, 1)),
                     output_offset=int(rng.integers(-128, 128)))
        else:
            s1, s2 = 2.0 ** rng.uniform(-9, -1, 2)
            so = max(s1, s2) * 2.0 ** rng.uniform(-0.5, 2.0)
            zp1, zp2, zpo = (int(v) for v in rng.integers(-128, 128, 3))
            try:
                p = ops.add_params(s1, zp1, s2, zp2, so, zpo)
            except ValueError:
                continue
        break
    act = _act_range(rng, p["output_offset"])
    kw = dict(p, act_min=act[0], act_max=act[1])
    order = ["input1_offset", "input2_offset", "left_shift", "input1_multiplier", "input1_shift",
             "input2_multiplier", "input2_shift", "output_multiplier", "output_shift", "output_offset"]
    params = [size, *(int(p[key]) for key in order), *act]
    op = OP_ADD_IN_PLACE if rng.random() < 0.25 else OP_ADD
    return Case(op, params, [x1, x2], lambda mode: ops.add_s8(x1, x2, mode=mode, **kw), info=kw)


def softmax_case(rng: np.random.Generator) -> Case:
    rows = int(rng.integers(1, 5))
    r = rng.random()
    depth = int(rng.integers(1, 6)) if r < 0.4 else int(rng.integers(6, 40)) if r < 0.75 \
        else int(rng.integers(40, 400)) if r < 0.9 \
        else int(rng.integers(400, 1300))  # sums of 512 and more: the kernel's extension
    spread = int(rng.choice([4, 16, 64, 256]))
    x = np.clip(rng.integers(-spread // 2, spread // 2 + 1, (rows, depth)) + int(rng.integers(-100, 100)),
                -128, 127).astype(np.int8)
    scale = float(2.0 ** rng.uniform(-8, 1))
    beta = float(rng.choice([1.0, 0.5, 2.0, 1.3]))
    only_mode = None
    if rng.random() < 0.05:  # beta * scale so large that double rounding shifts left by 31
        scale, only_mode = 40.0, "double"
    p = ops.softmax_params(scale, beta, only_mode or "single")
    params = [rows, depth, p["input_multiplier"], p["input_left_shift"], p["diff_min"]]
    return Case(OP_SOFTMAX, params, [x], lambda mode: ops.softmax_s8(x, mode=mode, **p),
                info=dict(p, scale=scale, beta=beta), only_mode=only_mode)


GENERATORS: dict[str, Callable[[np.random.Generator], Case]] = {
    "conv2d": conv2d_case,
    "depthwise_conv2d": depthwise_conv2d_case,
    "fully_connected": fully_connected_case,
    "max_pool2d": max_pool2d_case,
    "avg_pool2d": avg_pool2d_case,
    "add": add_case,
    "softmax": softmax_case,
}

# Cases of one fast-path specialisation (run through the fast kernels only).
FAST_GENERATORS: dict[str, Callable[[np.random.Generator], Case]] = {
    "depthwise_conv2d_3x3": depthwise_conv2d_3x3_case,
}

_CASES: dict[str, list[Case]] = {}


def cases_for(kernel: str) -> list[Case]:
    """The same N_CASES random cases for a kernel, whatever the test order or worker."""
    if kernel not in _CASES:
        if kernel in FAST_GENERATORS:
            rng = np.random.default_rng(sorted(FAST_GENERATORS).index(kernel) + 2000)
            _CASES[kernel] = [FAST_GENERATORS[kernel](rng) for _ in range(N_CASES)]
        else:
            rng = np.random.default_rng(sorted(GENERATORS).index(kernel) + 1000)
            _CASES[kernel] = [GENERATORS[kernel](rng) for _ in range(N_CASES)]
    return _CASES[kernel]


def _describe(case: Case, got: np.ndarray, want: np.ndarray) -> str:
    bad = np.flatnonzero(got != want)
    return (f"op {case.op}, params {case.params}, "
            f"array shapes {[None if a is None else a.shape for a in case.arrays]}: "
            f"{bad.size} of {want.size} bytes differ, first at {bad[0]}: "
            f"C {got[bad[0]]} vs reference {want[bad[0]]}")


# --------------------------------------------------------------------------
# C == reference


@pytest.mark.parametrize("mode", ROUNDING_MODES)
@pytest.mark.parametrize("kernel", list(GENERATORS))
def test_kernel_matches_reference_bytes(kernel_driver, kernel, mode):
    cases = [c for c in cases_for(kernel) if c.only_mode in (None, mode)]
    expected = [c.expected(mode) for c in cases]
    got = run_driver(kernel_driver(mode), cases, [e.size for e in expected])
    failures = [_describe(c, g, e) for c, g, e in zip(cases, got, expected, strict=True)
                if not np.array_equal(g, e)]
    assert not failures, f"{len(failures)} of {len(cases)} cases differ; first: {failures[0]}"
    # The cases must exercise the arithmetic, not just the clamps.
    everything = np.concatenate(expected)
    assert np.unique(everything).size >= 200, "outputs barely vary: the cases test too little"
    inside = np.mean([((e > c.bounds[0]) & (e < c.bounds[1])).mean()
                      for c, e in zip(cases, expected, strict=True)])
    assert inside > 0.4, f"only {inside:.0%} of outputs lie strictly inside the activation range"


# --------------------------------------------------------------------------
# the fast kernels: same cases, constants laid out by microfit.codegen.layouts


def has_fast_path(case: Case) -> bool:
    """The fast depthwise kernel takes a depth multiplier of 1 only (codegen checks it too)."""
    return case.op != OP_DWCONV2D or case.params[5] == 1


def fast_case(case: Case, mode: str, allow_small: bool = True) -> Case:
    """A conv2d, fully connected, depthwise or add case as the fast kernels take it.

    ``allow_small=False`` withholds the small-accumulator flag, so the 64-bit
    requantization runs instead of the SMMULR one.
    """
    if case.op in (OP_ADD, OP_ADD_IN_PLACE):
        op = OP_ADD_FAST_IN_PLACE if case.op == OP_ADD_IN_PLACE else OP_ADD_FAST
        return Case(op, case.params, [*case.arrays, layouts.add_tables(case.info, mode)],
                    case.reference, case.info, case.only_mode)
    if case.op == OP_DWCONV2D:
        x, wt, bias, mult, shift = case.arrays
        in_off, out_off = case.params[14], case.params[15]
        biases = layouts.depthwise_biases(bias, wt, in_off)
        small = allow_small and layouts.depthwise_small(biases, wt)
        arrays = [x, layouts.pack_depthwise_weights(wt), biases,
                  layouts.pack_requant(mult, shift, out_off, small)]
        return Case(OP_DWCONV2D_FAST, case.params, arrays, case.reference, case.info,
                    case.only_mode)
    if case.op == OP_FC:
        cin, cout, in_off, out_off, lo, hi = case.params
        geometry = [1, 1, cin, 1, 1, cout, 1, 1, 1, 1, 1, 1, 0, 0]
        x = case.arrays[0].reshape(1, 1, 1, cin)
    else:
        geometry = case.params[:14]
        in_off, out_off, lo, hi = case.params[14:]
        x = case.arrays[0]
    _, wt, bias, mult, shift = case.arrays
    in_c, out_h, out_w, k_h, k_w = geometry[2], geometry[3], geometry[4], geometry[6], geometry[7]
    scratch = layouts.conv_fast_buffer_size(in_c, k_h, k_w, out_h, out_w)
    folded = layouts.fold_bias(bias, wt, in_off)
    small = allow_small and layouts.accumulators_small(folded, wt)
    arrays = [x, layouts.pack_conv_weights(wt), folded,
              layouts.pack_requant(mult, shift, out_off, small)]
    return Case(OP_CONV2D_FAST, [*geometry, in_off, out_off, lo, hi, scratch], arrays,
                case.reference, case.info, case.only_mode)


@pytest.mark.parametrize("simd", [False, True], ids=["plain", "simd"])
@pytest.mark.parametrize("mode", ROUNDING_MODES)
@pytest.mark.parametrize("kernel", ["conv2d", "fully_connected", "add", "depthwise_conv2d",
                                    "depthwise_conv2d_3x3", "conv2d-64bit",
                                    "depthwise_conv2d-64bit", "depthwise_conv2d_3x3-64bit"])
def test_fast_kernel_matches_reference_bytes(kernel_driver, kernel, mode, simd):
    """The fast kernels give the portable kernels' bytes, with and without the DSP code;
    "-64bit" withholds the small-accumulator flag (the other requantization path)."""
    name, _, variant = kernel.partition("-")
    cases = [fast_case(c, mode, allow_small=not variant) for c in cases_for(name)
             if c.only_mode in (None, mode) and has_fast_path(c)]
    assert len(cases) > 60
    if name != "add":
        flags = [int(c.arrays[3][0]) for c in cases]
        taken = {f & (layouts.RQ_FAST | layouts.RQ_SMALL) for f in flags}
        want = {0, layouts.RQ_FAST} if variant else {0, layouts.RQ_FAST | layouts.RQ_SMALL}
        assert taken == want, f"requantization paths exercised: {taken}"
    expected = [c.expected(mode) for c in cases]
    got = run_driver(kernel_driver(mode, simd), cases, [e.size for e in expected])
    failures = [_describe(c, g, e) for c, g, e in zip(cases, got, expected, strict=True)
                if not np.array_equal(g, e)]
    assert not failures, f"{len(failures)} of {len(cases)} cases differ; first: {failures[0]}"


def avr_case(case: Case) -> Case:
    """A conv2d or fully connected case as mf_conv2d_s8_avr takes it."""
    if case.op == OP_FC:
        cin, cout, in_off, out_off, lo, hi = case.params
        geometry = [1, 1, cin, 1, 1, cout, 1, 1, 1, 1, 1, 1, 0, 0]
        x = case.arrays[0].reshape(1, 1, 1, cin)
    else:
        geometry = case.params[:14]
        in_off, out_off, lo, hi = case.params[14:]
        x = case.arrays[0]
    _, wt, bias, mult, shift = case.arrays
    group = layouts.avr_group(wt, geometry[2])
    return Case(OP_CONV2D_AVR, [*geometry, in_off, out_off, lo, hi, group],
                [x, wt, layouts.fold_bias(bias, wt, in_off), mult, shift], case.reference,
                case.info, case.only_mode)


@pytest.mark.parametrize("mode", ROUNDING_MODES)
@pytest.mark.parametrize("kernel", ["conv2d", "fully_connected"])
def test_avr_kernel_matches_reference_bytes(kernel_driver, kernel, mode):
    """mf_conv2d_s8_avr (16-bit partial sums) gives the portable kernel's bytes."""
    cases = [avr_case(c) for c in cases_for(kernel) if c.only_mode in (None, mode)]
    expected = [c.expected(mode) for c in cases]
    got = run_driver(kernel_driver(mode), cases, [e.size for e in expected])
    failures = [_describe(c, g, e) for c, g, e in zip(cases, got, expected, strict=True)
                if not np.array_equal(g, e)]
    assert not failures, f"{len(failures)} of {len(cases)} cases differ; first: {failures[0]}"
    assert len({c.params[18] for c in cases}) >= 3  # groups of several lengths were exercised


def test_avr_group_keeps_16_bit_partial_sums_safe():
    w = np.array([[100, 100, 60, 2, 2, 2, 120, 5]], np.int8)  # one row, in_c 4: runs of 4
    assert layouts.avr_group(w, 4) == 2  # 100 + 100 = 200 <= 255 < 100 + 100 + 60
    w = np.full((3, 8), -127, np.int8)
    assert layouts.avr_group(w, 8) == 2  # 2 * 127 = 254 <= 255 < 381
    assert layouts.avr_group(np.full((1, 16), 1, np.int8), 16) == 16


def test_fast_kernel_layouts_are_what_the_c_comment_says():
    w = np.arange(3 * 5, dtype=np.int8).reshape(3, 5)  # 3 rows of K = 5 -> K4 = 8
    packed = layouts.pack_conv_weights(w).tolist()
    assert packed == [0, 1, 2, 3, 5, 6, 7, 8, 4, 0, 0, 0, 9, 0, 0, 0,  # rows 0 and 1
                      10, 11, 12, 13, 14, 0, 0, 0]                      # row 2 alone
    folded = layouts.fold_bias(np.array([1, 2, 2**31 - 1], np.int32), w, 3)
    assert folded.tolist() == [1 + 3 * 10, 2 + 3 * 35, -(2**31) + 3 * 60 - 1]
    assert layouts.conv_fast_buffer_size(3, 3, 3, 4, 4) == 2 * 28 * 2 + 28
    assert layouts.conv_fast_buffer_size(16, 1, 1, 1, 1) == 32
    # Depthwise: folded biases, then the zero line (input zero point -10 per channel, padded).
    dw = np.arange(27, dtype=np.int8).reshape(1, 3, 3, 3)
    b = layouts.depthwise_biases(np.array([5, -7, 0], np.int32), dw, 10)
    assert b[:3].tolist() == [5 + 10 * sum(range(0, 27, 3)), -7 + 10 * sum(range(1, 27, 3)),
                              10 * sum(range(2, 27, 3))]
    assert b[3:].astype("<i4").view(np.int8).tolist() == [-10, -10, -10, 0]


def test_rounding_modes_give_different_bytes(kernel_driver):
    """MF_SINGLE_ROUNDING reaches the kernels, and each driver matches its own mode."""
    cases = cases_for("conv2d")
    sizes = [c.expected("double").size for c in cases]
    double = np.concatenate(run_driver(kernel_driver("double"), cases, sizes))
    single = np.concatenate(run_driver(kernel_driver("single"), cases, sizes))
    diff = np.abs(double.astype(int) - single.astype(int))
    # Sane multipliers differ by one at most; the few extreme ones (a left shift
    # that wraps in double rounding) may differ by more.
    assert np.count_nonzero(diff == 1) > 0


def test_corrupted_weights_are_caught(kernel_driver):
    """The comparison can fail: inverted weights give bytes the reference rejects."""
    # Cases with a wide activation range (a degenerate one hides any error).
    cases = [c for c in cases_for("conv2d") if c.params[-1] - c.params[-2] >= 100][:60]
    expected = [c.expected("double") for c in cases]
    corrupted = [Case(c.op, c.params, [c.arrays[0], ~c.arrays[1], *c.arrays[2:]], c.reference)
                 for c in cases]
    got = run_driver(kernel_driver("double"), corrupted, [e.size for e in expected])
    differ = sum(not np.array_equal(g, e) for g, e in zip(got, expected, strict=True))
    assert differ >= 0.9 * len(cases), f"only {differ} of {len(cases)} corrupted cases detected"


@pytest.mark.parametrize("what", ["weights", "input", "output"])
def test_sanitizer_catches_out_of_bounds(kernel_driver, what):
    """A buffer one byte short makes the sanitized driver fail loudly."""
    # Stride and dilation 1: the last output reads the last input pixel.
    case = next(c for c in cases_for("conv2d") if c.arrays[0].size > 1 and c.arrays[1].size > 1
                and c.info["stride"] == (1, 1) and c.info["dilation"] == (1, 1))
    arrays = list(case.arrays)
    out_size = case.expected("double").size
    if what == "weights":
        arrays[1] = arrays[1].ravel()[:-1]
    elif what == "input":
        arrays[0] = arrays[0].ravel()[:-1]
    else:
        out_size -= 1
    short = Case(case.op, case.params, arrays, case.reference)
    proc = _run_raw(kernel_driver("double"), _pack([short], [out_size]))
    assert proc.returncode != 0
    assert b"AddressSanitizer" in proc.stderr


# --------------------------------------------------------------------------
# the reference on its own: hand-computed answers and rejected parameters


def test_avg_pool_rounds_half_away_from_zero():
    x = np.array([1, 2, -1, -2, 1, 0, -1, 0], dtype=np.int8).reshape(1, 1, 8, 1)
    out = ops.avg_pool2d_s8(x, kernel=(1, 2), stride=(1, 2))
    assert out.ravel().tolist() == [2, -2, 1, -1]


def test_avg_pool_counts_only_unpadded_positions():
    x = np.full((1, 2, 2, 1), 10, dtype=np.int8)
    out = ops.avg_pool2d_s8(x, kernel=3, stride=1, padding=1)
    assert out.ravel().tolist() == [10, 10, 10, 10]


def test_max_pool_ignores_padding_and_empty_window_gives_minus_128():
    x = np.full((1, 1, 1, 1), -100, dtype=np.int8)
    assert ops.max_pool2d_s8(x, kernel=3, stride=1, padding=1).ravel().tolist() == [-100]
    out = ops.max_pool2d_s8(x, kernel=1, stride=1, padding=(1, 0, 0, 0), act_min=-120)
    assert out.ravel().tolist() == [-120, -100]


def test_avg_pool_rejects_an_all_padding_window():
    x = np.zeros((1, 1, 1, 1), dtype=np.int8)
    with pytest.raises(ValueError, match="padding"):
        ops.avg_pool2d_s8(x, kernel=1, stride=1, padding=(1, 0, 0, 0))


def test_conv_skips_padded_taps_rather_than_reading_zero():
    # With input zero point 5, a padded tap would contribute (0 - 5) * w if read as 0.
    x = np.full((1, 1, 1, 1), 5, dtype=np.int8)
    w = np.ones((1, 3, 3, 1), dtype=np.int8)
    out = ops.conv2d_s8(x, w, None, input_offset=-5, output_offset=0, multiplier=1 << 30,
                        shift=1, padding=1)
    assert out.ravel().tolist() == [0]


def test_conv_hand_computed():
    x = np.array([1, 2, 3, 4], dtype=np.int8).reshape(1, 2, 2, 1)
    w = np.array([1, -1, 2, 0], dtype=np.int8).reshape(1, 2, 2, 1)
    # acc = (1+1)*1 + (2+1)*-1 + (3+1)*2 + (4+1)*0 + 7 = 14; * 0.5 -> 7; + 3 -> 10
    out = ops.conv2d_s8(x, w, np.array([7], dtype=np.int32), input_offset=1, output_offset=3,
                        multiplier=1 << 30, shift=0)
    assert out.ravel().tolist() == [10]


def test_depthwise_multiplier_channel_order():
    x = np.array([10, 20], dtype=np.int8).reshape(1, 1, 1, 2)
    w = np.array([1, 2, 3, 4], dtype=np.int8).reshape(1, 1, 1, 4)  # oc = ic * 2 + m
    out = ops.depthwise_conv2d_s8(x, w, None, input_offset=0, output_offset=0,
                                  multiplier=1 << 30, shift=1)
    assert out.ravel().tolist() == [10, 20, 60, 80]


def test_add_of_equal_scales_doubles():
    x = np.array([-50, -1, 0, 1, 50], dtype=np.int8)
    p = ops.add_params(0.1, 0, 0.1, 0, 0.1, 0)
    assert ops.add_s8(x, x, **p).tolist() == [-100, -2, 0, 2, 100]


def test_add_params_match_tflite_prepare():
    p = ops.add_params(0.5, 3, 0.25, -2, 1.0, 7)
    # twice_max = 1.0: input multipliers 0.5 and 0.25, output 1 / 2^20.
    assert (p["input1_multiplier"], p["input1_shift"]) == (1 << 30, 0)
    assert (p["input2_multiplier"], p["input2_shift"]) == (1 << 30, -1)
    assert (p["output_multiplier"], p["output_shift"]) == (1 << 30, -19)
    assert (p["input1_offset"], p["input2_offset"], p["output_offset"]) == (-3, 2, 7)
    assert p["left_shift"] == 20


def test_output_size_and_same_padding():
    assert ops.output_size(7, 3, 2, 1, 1, 1) == 4
    assert ops.output_size(10, 3, 1, 2, 0, 0) == 6
    assert ops.same_padding(7, 3, 2) == (1, 1)
    assert ops.same_padding(8, 3, 2) == (0, 1)
    assert ops.same_padding(5, 1, 1) == (0, 0)
    with pytest.raises(ValueError):
        ops.output_size(2, 5)


@pytest.mark.parametrize("bad", [
    dict(input_offset=129), dict(output_offset=128), dict(act_min=10, act_max=5),
    dict(shift=31), dict(multiplier=-1), dict(mode="triple"),
])
def test_reference_rejects_parameters_the_c_kernels_do_not_check(bad):
    x = np.zeros((1, 3, 3, 2), dtype=np.int8)
    w = np.zeros((4, 3, 3, 2), dtype=np.int8)
    kw = dict(input_offset=0, output_offset=0, multiplier=1 << 30, shift=0)
    kw.update(bad)
    with pytest.raises(ValueError):
        ops.conv2d_s8(x, w, None, **kw)


def test_reference_refuses_int32_accumulator_overflow():
    x = np.full((1, 128), 127, dtype=np.int8)
    w = np.full((1, 128), 127, dtype=np.int8)
    bias = np.array([INT32_MAX - 100], dtype=np.int32)
    with pytest.raises(OverflowError):
        ops.fully_connected_s8(x, w, bias, input_offset=0, output_offset=0,
                               multiplier=1 << 30, shift=0)


def test_softmax_hand_computed():
    p = ops.softmax_params(0.1)
    out = ops.softmax_s8(np.array([[5, 5], [7, 7], [0, -128]], dtype=np.int8), **p)
    # 1/2 -> 128/256 -> 0 after the zero point; 1 -> 256/256 -> clamped to 127;
    # a difference of 12.8 in real units -> exp(-12.8) rounds to 0 -> -128.
    assert out.tolist() == [[0, 0], [0, 0], [127, -128]]
    assert ops.softmax_s8(np.array([3], dtype=np.int8), **p).tolist() == [127]


def test_softmax_fixed_point_constants_are_what_they_claim():
    for k, raw in zip(range(-2, 5), ops._EXP_MINUS_POW2, strict=True):
        assert raw == round(math.exp(-(2.0 ** k)) * 2**31)
    assert ops._EXP_MINUS_ONE_EIGHTH == round(math.exp(-1 / 8) * 2**31)
    assert ops._ONE_THIRD == round(2**31 / 3)
    assert ops._FORTY_EIGHT_17THS == round(48 / 17 * 2**29)
    assert ops._MINUS_THIRTY_TWO_17THS == round(-32 / 17 * 2**29)


def test_softmax_params_match_tflite_prepare():
    p = ops.softmax_params(0.125, beta=1.0)
    # beta * scale * 2^26 = 2^23: multiplier 1/2 shifted left by 24.
    assert (p["input_multiplier"], p["input_left_shift"]) == (1 << 30, 24)
    assert p["diff_min"] == -((31 << 26) >> 24)
    # A huge beta * scale: capped at 2^31 - 1 (double) or 2^30 - 1 (single).
    assert ops.softmax_params(1000.0)["input_left_shift"] == 31
    assert ops.softmax_params(1000.0, mode="single")["input_left_shift"] == 30


# --------------------------------------------------------------------------
# cross-compilers and the host compiler driver

_ARM = "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi"
# target -> (compiler, flags, package). -O0 too: the fast kernels' assembly
# needs registers an unoptimised build keeps for itself.
CROSS = {
    "cortex-m4": ("arm-none-eabi-gcc", ["-mcpu=cortex-m4", "-mthumb", "-O2"], _ARM),
    "cortex-m4-O0": ("arm-none-eabi-gcc", ["-mcpu=cortex-m4", "-mthumb", "-O0"], _ARM),
    "cortex-m7": ("arm-none-eabi-gcc", ["-mcpu=cortex-m7", "-mthumb", "-O2"], _ARM),
    "cortex-m0plus": ("arm-none-eabi-gcc", ["-mcpu=cortex-m0plus", "-mthumb", "-O2"], _ARM),
    "cortex-m3": ("arm-none-eabi-gcc", ["-mcpu=cortex-m3", "-mthumb", "-O2"], _ARM),
    "atmega328p": ("avr-gcc", ["-mmcu=atmega328p", "-Os"], "apt-get install gcc-avr avr-libc"),
}


@pytest.mark.parametrize("defines", [[], ["-DMF_SINGLE_ROUNDING"], ["-DMF_CONST_IN_RAM"]],
                         ids=["default", "single", "const-in-ram"])
@pytest.mark.parametrize("target", list(CROSS))
def test_runtime_compiles_for_microcontrollers(tmp_path, target, defines):
    compiler, flags, package = CROSS[target]
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} not installed: {package}")
    cmd = [compiler, *flags, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", *defines,
           f"-I{runtime_dir() / 'include'}", "-c", *(str(s) for s in runtime_sources())]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(list(tmp_path.glob("*.o"))) == len(runtime_sources())


def test_runtime_header_compiles_alone_in_pedantic_c99(tmp_path):
    src = tmp_path / "one.c"
    src.write_text('#include "mf_runtime.h"\nint main(void) { return 0; }\n')
    compile_host([src], tmp_path / "one", [runtime_dir() / "include"], sanitize=False,
                 extra_flags=("-pedantic",))


def test_compile_host_reports_compiler_errors(tmp_path):
    src = tmp_path / "broken.c"
    src.write_text("int main(void) { return undeclared_name; }\n")
    with pytest.raises(BuildError, match="undeclared_name"):
        compile_host([src], tmp_path / "broken", [])


def test_compile_host_names_the_package_when_gcc_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolchainMissingError, match="apt-get install gcc"):
        compile_host([tmp_path / "x.c"], tmp_path / "x", [])


# --------------------------------------------------------------------------
# the same kernels executed on an emulated ATmega328P (simavr)

AVR_HARNESS = Path(__file__).parent / "c" / "avr_harness.c"
AVR_ARENA = 1280
AVR_FLASH_BUDGET = 12_000  # bytes of case constants; the rest of the 32 KB is kernel code
AVR_BATCHES = 3  # firmware images per rounding mode, each with different cases

# op -> (params struct, kernel function, struct fields in driver order)
_CONV_FIELDS = ["in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "k_h", "k_w",
                "stride_h", "stride_w", "dilation_h", "dilation_w", "pad_top", "pad_left",
                "input_offset", "output_offset", "act_min", "act_max"]
_POOL_FIELDS = ["in_h", "in_w", "channels", "out_h", "out_w", "k_h", "k_w", "stride_h",
                "stride_w", "pad_top", "pad_left", "act_min", "act_max"]
_ADD_FIELDS = ["size", "input1_offset", "input2_offset", "left_shift", "input1_multiplier",
               "input1_shift", "input2_multiplier", "input2_shift", "output_multiplier",
               "output_shift", "output_offset", "act_min", "act_max"]
C_SIGNATURES = {
    OP_CONV2D: ("mf_conv2d_params", "mf_conv2d_s8", _CONV_FIELDS),
    OP_DWCONV2D: ("mf_depthwise_conv2d_params", "mf_depthwise_conv2d_s8",
                  [f if f != "out_c" else "depth_multiplier" for f in _CONV_FIELDS]),
    OP_FC: ("mf_fully_connected_params", "mf_fully_connected_s8",
            ["in_features", "out_features", "input_offset", "output_offset", "act_min", "act_max"]),
    OP_MAXPOOL: ("mf_pool2d_params", "mf_max_pool2d_s8", _POOL_FIELDS),
    OP_AVGPOOL: ("mf_pool2d_params", "mf_avg_pool2d_s8", _POOL_FIELDS),
    OP_ADD: ("mf_add_params", "mf_add_s8", _ADD_FIELDS),
    OP_ADD_IN_PLACE: ("mf_add_params", "mf_add_s8", _ADD_FIELDS),
    OP_SOFTMAX: ("mf_softmax_params", "mf_softmax_s8",
                 ["rows", "depth", "input_multiplier", "input_left_shift", "diff_min"]),
    OP_CONV2D_FAST: ("mf_conv2d_params", "mf_conv2d_s8_fast", _CONV_FIELDS),
    OP_ADD_FAST: ("mf_add_params", "mf_add_s8_fast", _ADD_FIELDS),
    OP_ADD_FAST_IN_PLACE: ("mf_add_params", "mf_add_s8_fast", _ADD_FIELDS),
    OP_CONV2D_AVR: ("mf_conv2d_params", "mf_conv2d_s8_avr", _CONV_FIELDS),
    OP_DWCONV2D_FAST: ("mf_depthwise_conv2d_params", "mf_depthwise_conv2d_s8_fast",
                       [f if f != "out_c" else "depth_multiplier" for f in _CONV_FIELDS]),
}
_ADD_OPS = (OP_ADD, OP_ADD_IN_PLACE, OP_ADD_FAST, OP_ADD_FAST_IN_PLACE)


def _c_array(name: str, a: np.ndarray) -> str:
    ctype = {np.dtype(np.int8): "int8_t", np.dtype(np.int16): "int16_t",
             np.dtype(np.int32): "int32_t"}[a.dtype]
    # INT32_MIN has no literal of its own in C.
    vals = ", ".join("(-2147483647 - 1)" if int(v) == -(1 << 31) else str(int(v)) for v in a.ravel())
    # Word-aligned, as generated weights are (the fast kernels load words).
    return f"static const {ctype} {name}[{a.size}] MF_TEST_ALIGN MF_CONST = {{{vals}}};"


def avr_program(cases: list[Case]) -> str:
    """C source running ``cases`` with every constant in flash, as codegen would emit it."""
    decls, calls = [], []
    for i, case in enumerate(cases):
        struct_name, fn, fields = C_SIGNATURES[case.op]
        init = ", ".join(f".{f} = {v}" for f, v in zip(fields, case.params[:len(fields)],
                                                       strict=True))
        decls.append(f"static const {struct_name} p{i} MF_CONST = {{{init}}};")
        names = []
        for j, a in enumerate(case.arrays):
            if a is None:
                names.append("NULL")
            else:
                decls.append(_c_array(f"a{i}_{j}", a))
                names.append(f"a{i}_{j}")
        n_out = case.expected("double").size
        body = []
        if case.op in _ADD_OPS:
            n = case.params[0]
            body.append(f"mf_test_load(mf_test_arena, a{i}_0, {n});")
            body.append(f"mf_test_load(mf_test_arena + {n}, a{i}_1, {n});")
            in_place = case.op in (OP_ADD_IN_PLACE, OP_ADD_FAST_IN_PLACE)
            out = "mf_test_arena" if in_place else f"mf_test_arena + {2 * n}"
            tables = f"a{i}_2, " if case.op != OP_ADD and case.op != OP_ADD_IN_PLACE else ""
            body.append(f"{fn}(&p{i}, mf_test_arena, mf_test_arena + {n}, {tables}{out});")
        elif case.op == OP_CONV2D_AVR:
            n_in = case.arrays[0].size
            out = f"mf_test_arena + {n_in}"
            body.append(f"mf_test_load(mf_test_arena, {names[0]}, {n_in});")
            body.append(f"{fn}(&p{i}, mf_test_arena, {', '.join(names[1:])}, {case.params[18]}, "
                        f"{out});")
        elif case.op == OP_CONV2D_FAST:
            n_in = case.arrays[0].size
            out = f"mf_test_arena + {n_in}"
            scratch = f"mf_test_arena + {(n_in + n_out + 3) // 4 * 4}"
            body.append(f"mf_test_load(mf_test_arena, {names[0]}, {n_in});")
            body.append(f"{fn}(&p{i}, mf_test_arena, {', '.join(names[1:])}, {scratch}, {out});")
        else:
            n_in = case.arrays[0].size
            out = f"mf_test_arena + {n_in}"
            body.append(f"mf_test_load(mf_test_arena, {names[0]}, {n_in});")
            body.append(f"{fn}(&p{i}, {', '.join(['mf_test_arena', *names[1:], out])});")
        body.append(f"mf_test_emit({i}, {out}, {n_out});")
        calls.append("    " + "\n    ".join(body))
    return "\n".join([
        '#include <stddef.h>', '#include <stdint.h>', '#include "mf_runtime.h"', "",
        "#if defined(__AVR__)", "#define MF_TEST_ALIGN", "#else",
        "#define MF_TEST_ALIGN __attribute__((aligned(4)))", "#endif", "",
        "extern int8_t mf_test_arena[];",
        "void mf_test_load(int8_t *dst, const int8_t *src, uint16_t n);",
        "void mf_test_emit(uint16_t case_index, const int8_t *out, uint16_t n);",
        "void mf_test_run_cases(void);", "",
        *decls, "", "void mf_test_run_cases(void)", "{", *calls, "}", ""])


def _avr_cases(batch: int, per_kernel: int = 4) -> list[Case]:
    """Small cases of every kernel, bias-less and in-place ones included, that fit the ATmega.

    Batch ``b`` draws from the b-th third of each kernel's cases, so batches differ.
    """
    chosen: list[Case] = []
    budget = AVR_FLASH_BUDGET
    for kernel in GENERATORS:
        picked = 0
        pool = cases_for(kernel)
        for case in pool[batch * len(pool) // AVR_BATCHES:]:
            n_out = case.expected("double").size
            n_act = sum(a.size for a in case.arrays[:2]) if case.op in (OP_ADD, OP_ADD_IN_PLACE) \
                else case.arrays[0].size
            const = sum(a.nbytes for a in case.arrays if a is not None)
            want_null = case.op in (OP_CONV2D, OP_FC) and picked == 0
            if want_null and case.arrays[2] is not None:
                continue
            if n_act + n_out > AVR_ARENA or const > budget // 8:
                continue
            chosen.append(case)
            budget -= const
            picked += 1
            if picked == per_kernel:
                break
    # The 8-bit path (16-bit partial sums, constants in flash) on two of the same
    # convolutions, from what is left of the flash budget.
    small = sorted((c for c in chosen if c.op in (OP_CONV2D, OP_FC)),
                   key=lambda c: sum(a.nbytes for a in c.arrays if a is not None))
    chosen += [avr_case(c) for c in small[:2]]
    return chosen


def _simavr_lines(stderr: str) -> list[str]:
    """simavr prints UART text wrapped in colour codes, '\\n' as '.', long lines split."""
    text = "".join(piece[:-1] + "\n" if piece.endswith(".") else piece
                   for piece in re.sub(r"\x1b\[[0-9;]*m", "", stderr).split("\n"))
    return text.splitlines()


@pytest.mark.parametrize("batch", range(AVR_BATCHES))
@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_kernels_on_emulated_atmega328p_match_reference(tmp_path, mode, batch):
    """Constants in flash via PROGMEM, 16-bit int, software int64: same bytes as numpy."""
    for tool, package in (("avr-gcc", "gcc-avr avr-libc"), ("simavr", "simavr")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed: apt-get install {package}")
    cases = _avr_cases(batch)
    assert {c.op for c in cases} >= {OP_CONV2D, OP_DWCONV2D, OP_FC, OP_MAXPOOL, OP_AVGPOOL,
                                     OP_CONV2D_AVR}
    src = tmp_path / "cases.c"
    src.write_text(avr_program(cases))
    elf = tmp_path / "kernels.elf"
    defines = ["-DMF_SINGLE_ROUNDING"] if mode == "single" else []
    # Unused kernels are collected, as in firmware (the runtime alone outgrows 32 KB).
    cmd = ["avr-gcc", "-mmcu=atmega328p", "-Os", "-std=c99", "-Wall", "-Wextra", "-Werror",
           "-ffunction-sections", "-fdata-sections", "-Wl,--gc-sections",
           *defines, f"-I{runtime_dir() / 'include'}", str(AVR_HARNESS), str(src),
           *(str(s) for s in runtime_sources()), "-o", str(elf)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    try:
        sim = subprocess.run(["simavr", "-m", "atmega328p", "-f", "16000000", str(elf)],
                             capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the AVR firmware did not finish within {exc.timeout} s of simulation")
    lines = _simavr_lines(sim.stderr)
    assert lines and lines[-1] == "END", f"firmware did not finish:\n{sim.stderr[-2000:]}"
    outputs = {}
    for line in lines[:-1]:
        m = re.fullmatch(r"O([0-9a-f]{4}) ([0-9a-f]*)", line)
        assert m, f"unexpected UART line {line!r}"
        outputs[int(m.group(1), 16)] = np.frombuffer(bytes.fromhex(m.group(2)), dtype=np.int8)
    assert sorted(outputs) == list(range(len(cases)))
    for i, case in enumerate(cases):
        want = case.expected(mode)
        assert np.array_equal(outputs[i], want), _describe(case, outputs[i], want)


# --------------------------------------------------------------------------
# the same kernels, portable and fast, on emulated Cortex-M3 and M4 (QEMU mps2)

MPS2_HARNESS = Path(__file__).parent / "c" / "mps2_harness.c"
QEMU_CASES = 40  # per kernel and path


def _qemu_cases(mode: str) -> list[Case]:
    chosen: list[Case] = []
    for kernel in GENERATORS:
        pool = [c for c in cases_for(kernel) if c.only_mode in (None, mode)][:QEMU_CASES]
        chosen += pool
        if kernel in ("conv2d", "fully_connected", "add", "depthwise_conv2d"):
            chosen += [fast_case(c, mode) for c in pool if has_fast_path(c)]
        if kernel in ("conv2d", "depthwise_conv2d"):  # the 64-bit requantization as well
            chosen += [fast_case(c, mode, allow_small=False) for c in pool[:QEMU_CASES // 2]
                       if has_fast_path(c)]
    # The 3x3 depthwise specialisation (assembly on the M4), both requantization paths.
    pool = [c for c in cases_for("depthwise_conv2d_3x3") if c.only_mode in (None, mode)]
    chosen += [fast_case(c, mode) for c in pool[:QEMU_CASES]]
    chosen += [fast_case(c, mode, allow_small=False) for c in pool[QEMU_CASES:QEMU_CASES + 10]]
    return chosen


@pytest.mark.qemu
@pytest.mark.parametrize("board,mode", [("qemu-mps2-an386", "double"), ("qemu-mps2-an386", "single"),
                                        ("qemu-mps2-an385", "double")],
                         ids=["m4-double", "m4-single", "m3-double"])
def test_kernels_on_emulated_cortex_m_match_reference(tmp_path, board, mode):
    """Every kernel, and the fast ones with the DSP extension's assembly (M4) or without (M3,
    trapping unaligned accesses as a Cortex-M0 would)."""
    from microfit.icount import build_baremetal, run_counted

    for tool, package in (("arm-none-eabi-gcc", "gcc-arm-none-eabi libnewlib-arm-none-eabi"),
                          ("qemu-system-arm", "qemu-system-arm")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed: apt-get install {package}")
    cases = _qemu_cases(mode)
    assert {c.op for c in cases} >= {OP_CONV2D_FAST, OP_ADD_FAST, OP_SOFTMAX, OP_DWCONV2D}
    src = tmp_path / "cases.c"
    src.write_text(avr_program(cases))
    defines = {"MF_SINGLE_ROUNDING": "1"} if mode == "single" else {}
    flags: list[str] = []
    if board == "qemu-mps2-an385":  # no DSP, and strict alignment as on a Cortex-M0
        defines["MF_TEST_TRAP_UNALIGNED"] = "1"
        flags.append("-mno-unaligned-access")
    elf = build_baremetal([MPS2_HARNESS, src, *runtime_sources()], tmp_path / "kernels.elf", board,
                          [runtime_dir() / "include"], defines, extra_flags=flags)
    run = run_counted(elf, board, timeout=120)
    lines = run.uart.decode(errors="replace").splitlines()
    assert lines and lines[-1] == "END", f"firmware did not finish:\n{run.uart[-2000:]!r}"
    outputs = {}
    for line in lines[:-1]:
        m = re.fullmatch(r"O([0-9a-f]{4}) ([0-9a-f]*)", line)
        assert m, f"unexpected UART line {line!r}"
        outputs[int(m.group(1), 16)] = np.frombuffer(bytes.fromhex(m.group(2)), dtype=np.int8)
    assert sorted(outputs) == list(range(len(cases)))
    for i, case in enumerate(cases):
        want = case.expected(mode)
        assert np.array_equal(outputs[i], want), _describe(case, outputs[i], want)


# --------------------------------------------------------------------------
# the reference against TFLite's own interpreters, on one-op .tflite models
#
# TFLite Micro's interpreter (reference kernels, double rounding) and LiteRT's
# with BUILTIN_REF kernels. TFLite only pads SAME or VALID and derives the
# multipliers from float scales at Prepare time, so these cases are built
# from scales; scales have 10-bit mantissas so that every scale product is
# exact in float32 and TFLite's float-vs-double intermediate steps agree.

ORACLE_CASES = 40


@dataclass
class OracleCase:
    """A one-op int8 .tflite model, its inputs, and the reference's answer by mode."""

    name: str
    model: bytes
    inputs: list[np.ndarray]
    reference: Callable[[str], np.ndarray]


def _scale(rng: np.random.Generator, lo: int, hi: int) -> float:
    """A float32-exact scale: a 10-bit integer times a power of two in [2^lo, 2^hi)."""
    return float(np.ldexp(int(rng.integers(512, 1024)), int(rng.integers(lo, hi)) - 10))


def _scale_near(rng: np.random.Generator, target: float) -> float:
    """A float32-exact scale (10-bit mantissa) within a factor of two of ``target``."""
    mant, exp = np.frexp(target * 2.0 ** rng.uniform(-1, 1))
    return float(np.ldexp(int(mant * 1024), int(exp) - 10))


def _fused(rng: np.random.Generator, scale: float, zp: int) -> tuple[int, int, int]:
    """(TFLite fused activation, act_min, act_max) as CalculateActivationRangeQuantized."""
    from ai_edge_litert.schema_py_generated import ActivationFunctionType as Act

    kind = int(rng.integers(0, 3))
    if kind == 0:
        return Act.NONE, -128, 127
    if kind == 1:
        return Act.RELU, max(-128, zp), 127
    six = zp + int(tflite_round(float(np.float32(6.0) / np.float32(scale))))  # float32 divide
    return Act.RELU6, max(-128, zp), min(127, six)


def _tflite_model(opcode: int, tensors: list[dict], consts: dict[int, np.ndarray],
                  inputs: list[int], outputs: list[int], options_type: int, options) -> bytes:
    """Serialise a one-operator subgraph; tensor dicts give name, shape, type, scale, zp."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as S

    model = S.ModelT()
    model.version = 3
    model.description = "microfit kernel oracle"
    code = S.OperatorCodeT()
    code.builtinCode = opcode
    code.deprecatedBuiltinCode = min(opcode, 127)
    code.version = 1
    model.operatorCodes = [code]
    model.buffers = [S.BufferT()]
    flat = []
    for i, spec in enumerate(tensors):
        t = S.TensorT()
        t.name, t.shape = spec["name"], list(spec["shape"])
        t.type = S.TensorType.INT32 if spec.get("int32") else S.TensorType.INT8
        t.buffer = 0
        if i in consts:
            buf = S.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(consts[i]).tobytes(), np.uint8).tolist()
            model.buffers.append(buf)
            t.buffer = len(model.buffers) - 1
        q = S.QuantizationParametersT()
        q.scale = [float(s) for s in np.atleast_1d(spec["scale"])]
        q.zeroPoint = [int(z) for z in np.broadcast_to(spec.get("zp", 0), len(q.scale))]
        q.quantizedDimension = spec.get("qdim", 0)
        t.quantization = q
        flat.append(t)
    op = S.OperatorT()
    op.opcodeIndex = 0
    op.inputs = [i for i in range(len(tensors)) if i not in outputs]
    op.outputs = outputs
    op.builtinOptionsType = options_type
    op.builtinOptions = options
    graph = S.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators = flat, inputs, outputs, [op]
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _conv_like_oracle(rng: np.random.Generator, depthwise: bool) -> OracleCase:
    from ai_edge_litert import schema_py_generated as S

    while True:
        h, w = (int(v) for v in rng.integers(1, 14, 2))
        kh, kw = (int(v) for v in rng.integers(1, 5, 2))
        sh, sw = (int(v) for v in rng.integers(1, 3, 2))
        dh, dw = (int(v) for v in rng.integers(1, 3, 2))
        same = bool(rng.random() < 0.5)
        if same or (h >= dh * (kh - 1) + 1 and w >= dw * (kw - 1) + 1):
            break
    cin = int(rng.integers(1, 9))
    dm = int(rng.integers(1, 4)) if depthwise else 1
    cout = cin * dm if depthwise else int(rng.integers(1, 17))
    s_in = _scale(rng, -6, 0)
    zp_in, zp_out = (int(v) for v in rng.integers(-128, 128, 2))
    s_w = np.array([_scale(rng, -9, -5) for _ in range(cout)])
    x = _s8(rng, (1, h, w, cin))
    wt = _s8(rng, (1, kh, kw, cout) if depthwise else (cout, kh, kw, cin), lo=-127)
    acc_rms = np.sqrt(kh * kw * (1 if depthwise else cin)) * _rms(x.astype(np.int32) - zp_in) * _rms(wt)
    s_out = _scale_near(rng, s_in * float(s_w.mean()) * acc_rms / 40)
    act, act_min, act_max = _fused(rng, s_out, zp_out)
    bias = rng.integers(-3000, 3000, cout).astype(np.int32)
    eff = [(s_in * sw_) / s_out for sw_ in s_w]  # exact product, then one division
    pt, pb = ops.same_padding(h, kh, sh, dh) if same else (0, 0)
    pl, pr = ops.same_padding(w, kw, sw, dw) if same else (0, 0)
    tensors = [dict(name="x", shape=x.shape, scale=s_in, zp=zp_in),
               dict(name="w", shape=wt.shape, scale=s_w, qdim=3 if depthwise else 0),
               dict(name="b", shape=(cout,), scale=s_in * s_w, int32=True),
               dict(name="y", shape=(1, ops.output_size(h, kh, sh, dh, pt, pb),
                                     ops.output_size(w, kw, sw, dw, pl, pr), cout),
                    scale=s_out, zp=zp_out)]
    opts = S.DepthwiseConv2DOptionsT() if depthwise else S.Conv2DOptionsT()
    opts.padding = S.Padding.SAME if same else S.Padding.VALID
    opts.strideH, opts.strideW, opts.dilationHFactor, opts.dilationWFactor = sh, sw, dh, dw
    opts.fusedActivationFunction = act
    if depthwise:
        opts.depthMultiplier = dm
    model = _tflite_model(
        S.BuiltinOperator.DEPTHWISE_CONV_2D if depthwise else S.BuiltinOperator.CONV_2D,
        tensors, {1: wt, 2: bias}, [0], [3],
        S.BuiltinOptions.DepthwiseConv2DOptions if depthwise else S.BuiltinOptions.Conv2DOptions,
        opts)
    fn = ops.depthwise_conv2d_s8 if depthwise else ops.conv2d_s8

    def reference(mode: str) -> np.ndarray:
        mult, shift = zip(*(quantize_multiplier(e, mode) for e in eff), strict=True)
        return fn(x, wt, bias, input_offset=-zp_in, output_offset=zp_out, multiplier=mult,
                  shift=shift, stride=(sh, sw), dilation=(dh, dw), padding=(pt, pl, pb, pr),
                  act_min=act_min, act_max=act_max, mode=mode)

    return OracleCase("depthwise_conv2d" if depthwise else "conv2d", model, [x], reference)


def _fc_oracle(rng: np.random.Generator) -> OracleCase:
    from ai_edge_litert import schema_py_generated as S

    cin, cout = int(rng.integers(1, 120)), int(rng.integers(1, 160))
    s_in, s_w = _scale(rng, -6, 0), _scale(rng, -9, -5)
    zp_in, zp_out = (int(v) for v in rng.integers(-128, 128, 2))
    x = _s8(rng, (1, cin))
    wt = _s8(rng, (cout, cin), lo=-127)
    s_out = _scale_near(rng, s_in * s_w * np.sqrt(cin) * _rms(x.astype(np.int32) - zp_in) * _rms(wt) / 40)
    act, act_min, act_max = _fused(rng, s_out, zp_out)
    bias = rng.integers(-3000, 3000, cout).astype(np.int32)
    tensors = [dict(name="x", shape=x.shape, scale=s_in, zp=zp_in),
               dict(name="w", shape=wt.shape, scale=s_w),
               dict(name="b", shape=(cout,), scale=s_in * s_w, int32=True),
               dict(name="y", shape=(1, cout), scale=s_out, zp=zp_out)]
    opts = S.FullyConnectedOptionsT()
    opts.fusedActivationFunction = act
    model = _tflite_model(S.BuiltinOperator.FULLY_CONNECTED, tensors, {1: wt, 2: bias}, [0], [3],
                          S.BuiltinOptions.FullyConnectedOptions, opts)

    real = (s_in * s_w) / s_out

    def reference(mode: str) -> np.ndarray:
        if mode == "litert":  # double-precision requantization, not a C runtime mode
            acc = (x.astype(np.int64) - zp_in) @ wt.astype(np.int64).T + bias
            y = round_by_real_multiplier(acc, real) + zp_out
            return np.clip(y, act_min, act_max).astype(np.int8)
        m, s = quantize_multiplier(real, mode)
        return ops.fully_connected_s8(x, wt, bias, input_offset=-zp_in, output_offset=zp_out,
                                      multiplier=m, shift=s, act_min=act_min, act_max=act_max,
                                      mode=mode)

    return OracleCase("fully_connected", model, [x], reference)


def _pool_oracle(rng: np.random.Generator, is_max: bool) -> OracleCase:
    from ai_edge_litert import schema_py_generated as S

    while True:
        h, w = (int(v) for v in rng.integers(1, 12, 2))
        kh, kw = (int(v) for v in rng.integers(1, 5, 2))
        sh, sw = (int(v) for v in rng.integers(1, 4, 2))
        same = bool(rng.random() < 0.5)
        if same or (h >= kh and w >= kw):
            break
    c = int(rng.integers(1, 8))
    scale, zp = _scale(rng, -6, 0), int(rng.integers(-128, 128))
    act, act_min, act_max = _fused(rng, scale, zp)
    x = _s8(rng, (1, h, w, c))
    pt, pb = ops.same_padding(h, kh, sh) if same else (0, 0)
    pl, pr = ops.same_padding(w, kw, sw) if same else (0, 0)
    oh, ow = ops.output_size(h, kh, sh, 1, pt, pb), ops.output_size(w, kw, sw, 1, pl, pr)
    tensors = [dict(name="x", shape=x.shape, scale=scale, zp=zp),
               dict(name="y", shape=(1, oh, ow, c), scale=scale, zp=zp)]
    opts = S.Pool2DOptionsT()
    opts.padding = S.Padding.SAME if same else S.Padding.VALID
    opts.strideH, opts.strideW, opts.filterHeight, opts.filterWidth = sh, sw, kh, kw
    opts.fusedActivationFunction = act
    model = _tflite_model(S.BuiltinOperator.MAX_POOL_2D if is_max else S.BuiltinOperator.AVERAGE_POOL_2D,
                          tensors, {}, [0], [1], S.BuiltinOptions.Pool2DOptions, opts)
    fn = ops.max_pool2d_s8 if is_max else ops.avg_pool2d_s8
    return OracleCase("max_pool2d" if is_max else "avg_pool2d", model, [x],
                      lambda mode: fn(x, kernel=(kh, kw), stride=(sh, sw), padding=(pt, pl, pb, pr),
                                      act_min=act_min, act_max=act_max))


def _add_oracle(rng: np.random.Generator) -> OracleCase:
    from ai_edge_litert import schema_py_generated as S

    shape = (1, int(rng.integers(1, 25)), int(rng.integers(1, 25)), int(rng.integers(1, 17)))
    s1, s2 = _scale(rng, -7, 0), _scale(rng, -7, 0)
    so = _scale(rng, -6, 1)
    if 2 * max(s1, s2) >= (1 << 20) * so:  # TFLite needs an output multiplier below one
        so = 4 * max(s1, s2)
    zp1, zp2, zpo = (int(v) for v in rng.integers(-128, 128, 3))
    act, act_min, act_max = _fused(rng, so, zpo)
    x1, x2 = _s8(rng, shape), _s8(rng, shape)
    tensors = [dict(name="a", shape=shape, scale=s1, zp=zp1),
               dict(name="b", shape=shape, scale=s2, zp=zp2),
               dict(name="y", shape=shape, scale=so, zp=zpo)]
    opts = S.AddOptionsT()
    opts.fusedActivationFunction = act
    model = _tflite_model(S.BuiltinOperator.ADD, tensors, {}, [0, 1], [2],
                          S.BuiltinOptions.AddOptions, opts)
    return OracleCase("add", model, [x1, x2],
                      lambda mode: ops.add_s8(x1, x2, **ops.add_params(s1, zp1, s2, zp2, so, zpo, mode),
                                              act_min=act_min, act_max=act_max, mode=mode))


def _softmax_oracle(rng: np.random.Generator) -> OracleCase:
    from ai_edge_litert import schema_py_generated as S

    # TFLite asserts once a row's sum of exps reaches 512: keep depth below that.
    rows, depth = int(rng.integers(1, 4)), int(rng.choice([1, 2, 3, 5, 10, 37, 100, 300, 511]))
    spread = int(rng.choice([8, 32, 256]))
    x = np.clip(rng.integers(-spread // 2, spread // 2 + 1, (rows, depth)) + int(rng.integers(-100, 100)),
                -128, 127).astype(np.int8)
    scale, zp = _scale(rng, -8, 3), int(rng.integers(-128, 128))
    beta = float(rng.choice([1.0, 0.5, 2.0, 1.75]))
    tensors = [dict(name="x", shape=x.shape, scale=scale, zp=zp),
               dict(name="y", shape=x.shape, scale=1 / 256, zp=-128)]
    opts = S.SoftmaxOptionsT()
    opts.beta = beta
    model = _tflite_model(S.BuiltinOperator.SOFTMAX, tensors, {}, [0], [1],
                          S.BuiltinOptions.SoftmaxOptions, opts)
    return OracleCase("softmax", model, [x],
                      lambda mode: ops.softmax_s8(x, **ops.softmax_params(scale, beta, mode), mode=mode))


ORACLE_GENERATORS: dict[str, Callable[[np.random.Generator], OracleCase]] = {
    "conv2d": lambda rng: _conv_like_oracle(rng, False),
    "depthwise_conv2d": lambda rng: _conv_like_oracle(rng, True),
    "fully_connected": _fc_oracle,
    "max_pool2d": lambda rng: _pool_oracle(rng, True),
    "avg_pool2d": lambda rng: _pool_oracle(rng, False),
    "add": _add_oracle,
    "softmax": _softmax_oracle,
}


def _run_tflm(case: OracleCase) -> np.ndarray:
    from tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(case.model, arena_size=1 << 20)
    for i, x in enumerate(case.inputs):
        interp.set_input(x, i)
    interp.invoke()
    return interp.get_output(0)


def _run_litert(case: OracleCase) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=case.model,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    for detail, x in zip(interp.get_input_details(), case.inputs, strict=True):
        interp.set_tensor(detail["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


# The arithmetic each interpreter was observed to use, per kernel. TFLite
# Micro rounds twice ("double") everywhere. The ai-edge-litert wheel (2.3)
# with BUILTIN_REF does too in conv, depthwise conv and add, but its int8
# fully connected requantizes with a double-precision multiply and C's round
# ("litert", see microfit.quantize.fixedpoint): no build of LiteRT is
# "single" throughout. Pooling does not requantize, and softmax's one
# requantization (a left shift) rounds alike in both modes.
ORACLES = {"tflite-micro": ("tflite_micro", _run_tflm, {}),
           "litert-ref": ("ai_edge_litert", _run_litert, {"fully_connected": "litert"})}


@pytest.mark.parametrize("oracle", list(ORACLES))
@pytest.mark.parametrize("kernel", list(ORACLE_GENERATORS))
def test_reference_matches_tflite_interpreter(kernel, oracle):
    """microfit.reference.ops gives TFLite's bytes, in the rounding mode each interpreter uses."""
    module, run, modes = ORACLES[oracle]
    pytest.importorskip(module, reason=f"{module} not installed: pip install -e '.[oracles]'")
    mode = modes.get(kernel, "double")
    other = "single" if mode == "double" else "double"  # must give different bytes somewhere
    rng = np.random.default_rng(sorted(ORACLE_GENERATORS).index(kernel) + 2000)
    mode_mattered = 0
    for _ in range(ORACLE_CASES):
        case = ORACLE_GENERATORS[kernel](rng)
        got, want = run(case), case.reference(mode)
        assert got.shape == want.shape
        assert np.array_equal(got, want), (
            f"{kernel} vs {oracle} ({mode} rounding): {np.count_nonzero(got != want)} of "
            f"{want.size} bytes differ; max |diff| {np.abs(got.astype(int) - want.astype(int)).max()}")
        mode_mattered += not np.array_equal(got, case.reference(other))
    if kernel not in ("max_pool2d", "avg_pool2d", "softmax"):
        # Otherwise the cases could not tell the two rounding modes apart.
        assert mode_mattered > 0, f"no {kernel} case separates double from single rounding"
