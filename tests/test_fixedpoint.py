"""Requantization: Python fixedpoint == C mf_fixedpoint.h == the rounding rule on paper.

Three implementations are compared: the vectorised numpy twin, the C header
(built with ASan+UBSan, both rounding modes), and a plain-integer statement
of what each mode rounds to, written independently of both.
"""

from __future__ import annotations

import os
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from microfit.errors import ToolchainMissingError
from microfit.quantize.fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    ROUNDING_MODES,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    requantize_to_int8,
)
from microfit.toolchain.host import compile_host, runtime_dir

DRIVER_SRC = Path(__file__).parent / "c" / "fixedpoint_driver.c"
SHIFTS = np.arange(-31, 31)


@pytest.fixture(scope="module")
def requantize_c(tmp_path_factory):
    """mf_requantize as a function of numpy arrays, per rounding mode (built on demand)."""
    built: dict[str, Path] = {}

    def run(x, m, s, mode: str) -> np.ndarray:
        if mode not in built:
            out = tmp_path_factory.mktemp("fixedpoint") / f"fixedpoint_{mode}"
            defines = {"MF_SINGLE_ROUNDING": "1"} if mode == "single" else {}
            try:
                built[mode] = compile_host([DRIVER_SRC], out, [runtime_dir() / "include"],
                                           defines=defines, extra_flags=("-pedantic",))
            except ToolchainMissingError as exc:
                pytest.skip(str(exc))
        triples = np.stack(np.broadcast_arrays(x, m, s), axis=-1).astype("<i4")
        proc = subprocess.run([str(built[mode])], input=triples.tobytes(), capture_output=True,
                              timeout=120, env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        return np.frombuffer(proc.stdout, dtype="<i4").astype(np.int64)

    return run


def _wrap32(v: int) -> int:
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _round_half_up(num: int, den: int) -> int:
    """floor(num / den + 1/2) for den > 0, exactly."""
    return (2 * num + den) // (2 * den)


def _round_half_away(num: int, den: int) -> int:
    """num / den rounded to nearest, ties away from zero, for den > 0."""
    q = (2 * abs(num) + den) // (2 * den)
    return q if num >= 0 else -q


def requantize_on_paper(x: int, m: int, s: int, mode: str) -> int:
    """What each mode is specified to compute, in unbounded integers."""
    if mode == "single":
        return _wrap32(_round_half_up(x * m, 1 << (31 - s)))
    left, right = max(s, 0), max(-s, 0)
    a = _wrap32(x << left)
    if a == INT32_MIN and m == INT32_MIN:
        high = INT32_MAX
    else:
        high = _round_half_up(a * m, 1 << 31)  # gemmlowp's doubling high mul ties round up
    return _round_half_away(high, 1 << right)


def _edge_values() -> np.ndarray:
    powers = [1 << k for k in range(31)]
    vals = {0, 1, -1, INT32_MIN, INT32_MIN + 1, INT32_MAX, INT32_MAX - 1}
    for p in powers:
        vals.update({p, -p, p - 1, -p + 1, p + 1, -p - 1, p + p // 2, -(p + p // 2)})
    return np.array(sorted(v for v in vals if INT32_MIN <= v <= INT32_MAX), dtype=np.int64)


EDGE_MULTIPLIERS = np.array([0, 1, 1 << 30, (1 << 30) + 1, 1518500250, (1 << 31) - 2, INT32_MAX])


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_c_matches_python_on_edge_grid(requantize_c, mode):
    """Every edge x and multiplier against every shift in [-31, 30]."""
    x, m, s = np.meshgrid(_edge_values(), EDGE_MULTIPLIERS, SHIFTS, indexing="ij")
    x, m, s = x.ravel(), m.ravel(), s.ravel()
    want = multiply_by_quantized_multiplier(x, m, s, mode)
    got = requantize_c(x, m, s, mode)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (f"{bad.size} mismatches, first: x={x[bad[0]]} m={m[bad[0]]} "
                           f"s={s[bad[0]]} C={got[bad[0]]} py={want[bad[0]]}")


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_c_matches_python_on_random_values(requantize_c, mode):
    rng = np.random.default_rng(7 if mode == "double" else 8)
    n = 200_000
    # Mix full-range accumulators with realistic small ones.
    x = np.where(rng.random(n) < 0.5, rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True),
                 rng.integers(-(1 << 20), 1 << 20, n))
    m = rng.integers(1 << 30, INT32_MAX, n, endpoint=True)
    s = rng.integers(-31, 30, n, endpoint=True)
    want = multiply_by_quantized_multiplier(x, m, s, mode)
    got = requantize_c(x, m, s, mode)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (f"{bad.size} mismatches, first: x={x[bad[0]]} m={m[bad[0]]} "
                           f"s={s[bad[0]]} C={got[bad[0]]} py={want[bad[0]]}")
    assert np.unique(got).size > n // 2, "driver output barely varies: is it computing anything?"


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_python_matches_rounding_rule_on_paper(mode):
    """The numpy twin agrees with an independent statement of the rounding rule."""
    rng = np.random.default_rng(11)
    xs = np.concatenate([_edge_values(), rng.integers(INT32_MIN, INT32_MAX, 600),
                         rng.integers(-5000, 5000, 600)])
    ms = np.concatenate([EDGE_MULTIPLIERS, rng.integers(1 << 30, INT32_MAX, 5)])
    x, m, s = (a.ravel() for a in np.meshgrid(xs, ms, SHIFTS[::3], indexing="ij"))
    got = multiply_by_quantized_multiplier(x, m, s, mode)
    for i in range(0, x.size, 7):
        want = requantize_on_paper(int(x[i]), int(m[i]), int(s[i]), mode)
        assert got[i] == want, (int(x[i]), int(m[i]), int(s[i]), mode)


def test_rounding_modes_really_differ(requantize_c):
    """The define reaches the header: double and single rounding disagree by one somewhere."""
    rng = np.random.default_rng(3)
    x = rng.integers(-(1 << 16), 1 << 16, 50_000)
    m = rng.integers(1 << 30, INT32_MAX, 50_000)
    s = rng.integers(-12, 0, 50_000)
    d = requantize_c(x, m, s, "double")
    sg = requantize_c(x, m, s, "single")
    assert np.array_equal(d, multiply_by_quantized_multiplier(x, m, s, "double"))
    assert np.array_equal(sg, multiply_by_quantized_multiplier(x, m, s, "single"))
    assert np.count_nonzero(d != sg) > 0, "double and single rounding drivers agree everywhere"
    assert np.abs(d - sg).max() == 1, "the two modes may differ by one at most"
    # Known tie: x=3, m=0.5, shift -1 is 0.75; double rounds 1.5 -> 2, then 2/2 -> 1;
    # single rounds 0.75 -> 1. x=5: 1.25; double 2.5 -> 3, 3/2 = 1.5 -> 2; single 1.
    assert requantize_c([5], [1 << 30], [-1], "double")[0] == 2
    assert requantize_c([5], [1 << 30], [-1], "single")[0] == 1


def test_comparison_detects_a_wrong_expectation(requantize_c):
    """The check can fail: an expectation computed with the wrong shift is caught."""
    rng = np.random.default_rng(4)
    x = rng.integers(-(1 << 20), 1 << 20, 1000)
    m = rng.integers(1 << 30, INT32_MAX, 1000)
    s = rng.integers(-10, -1, 1000)
    got = requantize_c(x, m, s, "double")
    assert np.array_equal(got, multiply_by_quantized_multiplier(x, m, s, "double"))
    assert not np.array_equal(got, multiply_by_quantized_multiplier(x, m, s + 1, "double"))


# --------------------------------------------------------------------------
# quantize_multiplier


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_quantize_multiplier_reconstructs_real_within_2_pow_minus_31(mode):
    rng = np.random.default_rng(5)
    reals = np.concatenate([2.0 ** rng.uniform(-31, 30, 3000),
                            2.0 ** np.arange(-31, 30).astype(float),
                            [1.0 - 2.0 ** -40, 0.5 + 2.0 ** -40, 1.0, 0.999999999]])
    for real in reals:
        m, s = quantize_multiplier(float(real), mode)
        assert (1 << 30) <= m <= INT32_MAX, (real, m, s)
        assert -31 <= s <= 31, (real, m, s)
        approx = Fraction(m) * Fraction(2) ** (s - 31)
        err = abs(approx - Fraction(float(real))) / Fraction(float(real))
        assert err <= Fraction(1, 1 << 31), (real, m, s, float(err))


def test_quantize_multiplier_edge_cases():
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(1.0) == (1 << 30, 1)
    assert quantize_multiplier(0.5) == (1 << 30, 0)
    # Rounding the mantissa up to 2^31 renormalises to 2^30 with shift + 1.
    assert quantize_multiplier(1.0 - 2.0 ** -40) == (1 << 30, 1)
    # Too small to represent: TFLite flushes it to zero.
    assert quantize_multiplier(2.0 ** -40) == (0, 0)
    # Single rounding caps the shift at 30 (LiteRT), double does not.
    assert quantize_multiplier(2.0 ** 35, "single") == (INT32_MAX, 30)
    assert quantize_multiplier(2.0 ** 35, "double") == (1 << 30, 36)
    with pytest.raises(ValueError):
        quantize_multiplier(-0.1)


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_requantize_to_int8_applies_zero_point_and_clamp(mode):
    acc = np.array([-100000, -640, -64, 0, 64, 640, 100000])
    m, s = quantize_multiplier(1 / 64, mode)
    out = requantize_to_int8(acc, m, s, out_zero_point=-3, act_min=-20, act_max=120, mode=mode)
    assert out.dtype == np.int8
    assert out.tolist() == [-20, -13, -4, -3, -2, 7, 120]
