"""mf_concatenation_s8 and mf_slice_s8 == the numpy reference, byte for byte, under ASan+UBSan.

Random ranks, axes, input counts and sizes (including size-1 dimensions) go
through one sanitized driver (tests/c/concat_driver.c) that gives every array
its own exactly sized heap block, so an off-by-one read or write fails the run.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from microfit.build.host import compile_host, runtime_dir
from microfit.errors import ToolchainMissingError
from microfit.reference import ops

DRIVER_SRC = Path(__file__).parent / "c" / "concat_driver.c"
N_CASES = 300


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Path:
    src = runtime_dir() / "src" / "concatenation_s8.c"
    try:
        return compile_host([DRIVER_SRC, src], tmp_path_factory.mktemp("concat") / "driver",
                            [runtime_dir() / "include"], extra_flags=("-pedantic",))
    except ToolchainMissingError as exc:
        pytest.skip(str(exc))


def _words(*vals: int) -> bytes:
    return struct.pack(f"<{len(vals)}i", *vals)


def _outer_inner(shape: tuple[int, ...], axis: int) -> tuple[int, int]:
    return int(np.prod(shape[:axis])), int(np.prod(shape[axis + 1:]))


def _random_cases(rng: np.random.Generator):
    """(driver bytes, expected int8 output) pairs: concatenations and slices."""
    for k in range(N_CASES):
        rank = int(rng.integers(2, 5))
        shape = [1] + [int(rng.integers(1, 7)) for _ in range(rank - 1)]
        axis = int(rng.integers(1, rank))
        if k % 2 == 0:
            n = int(rng.integers(1, 5))
            xs = []
            for _ in range(n):
                s = list(shape)
                s[axis] = int(rng.integers(1, 9))
                xs.append(rng.integers(-128, 128, size=s, dtype=np.int8))
            outer, inner = _outer_inner(tuple(shape), axis)
            blob = _words(1, outer, inner, n, *[x.shape[axis] for x in xs])
            blob += b"".join(x.tobytes() for x in xs)
            yield blob, ops.concatenation_s8(xs, axis)
        else:
            x = rng.integers(-128, 128, size=shape, dtype=np.int8)
            size = int(rng.integers(1, shape[axis] + 1))
            begin = int(rng.integers(0, shape[axis] - size + 1))
            outer, inner = _outer_inner(tuple(shape), axis)
            blob = _words(2, outer, shape[axis], begin, size, inner) + x.tobytes()
            yield blob, ops.slice_s8(x, axis, begin, size)


def test_concat_and_slice_kernels_match_reference_bytes(driver):
    cases = list(_random_cases(np.random.default_rng(4)))
    stdin = _words(len(cases)) + b"".join(c[0] for c in cases)
    proc = subprocess.run([str(driver)], input=stdin, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]
    want = b"".join(np.ascontiguousarray(c[1]).tobytes() for c in cases)
    assert len(proc.stdout) == len(want)
    got = np.frombuffer(proc.stdout, np.int8)
    np.testing.assert_array_equal(got, np.frombuffer(want, np.int8))


def test_reference_concat_and_slice_are_numpy_concatenate_and_slicing(rng):
    a = rng.integers(-128, 128, size=(2, 3, 4, 5), dtype=np.int8)
    b = rng.integers(-128, 128, size=(2, 3, 4, 2), dtype=np.int8)
    y = ops.concatenation_s8([a, b], 3)
    assert y.shape == (2, 3, 4, 7)
    np.testing.assert_array_equal(y[..., :5], a)
    np.testing.assert_array_equal(ops.slice_s8(y, 3, 5, 2), b)
    np.testing.assert_array_equal(ops.slice_s8(y, 1, 1, 2), y[:, 1:3])


@pytest.mark.parametrize("call,match", [
    (lambda a: ops.concatenation_s8([a, a], 0), "axis must be in"),
    (lambda a: ops.concatenation_s8([a, a[:, :, :1, :1]], 3), "incompatible"),
    (lambda a: ops.concatenation_s8([a, a.astype(np.int16)], 1), "must be int8"),
    (lambda a: ops.slice_s8(a, 3, 3, 2), "leaves axis"),
    (lambda a: ops.slice_s8(a, 0, 0, 1), "axis must be in"),
])
def test_reference_rejects_invalid_concat_and_slice(call, match):
    a = np.zeros((1, 2, 3, 4), np.int8)
    with pytest.raises(ValueError, match=match):
        call(a)
