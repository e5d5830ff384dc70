"""mf_concatenation_s8 and mf_slice_s8 == the numpy reference, byte for byte, under ASan+UBSan.

Random ranks, axes, input counts and sizes (including size-1 dimensions) go
through one sanitized driver (tests/c/concat_driver.c) that gives every array
its own exactly sized heap block, so an off-by-one read or write fails the run.
The same kernels then run in one firmware per emulated board
(tests/emulated_kernels.py): 40 cases per kernel on Cortex-M4 and M3 (QEMU),
20 on the ATmega328P (simavr, params and axis sizes in flash).
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import emulated_kernels as emu
import numpy as np
import pytest

from microfit.errors import ToolchainMissingError
from microfit.reference import ops
from microfit.toolchain.host import compile_host, runtime_dir

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


def _random_cases(rng: np.random.Generator, n_cases: int = N_CASES, max_bytes: int = 1 << 30):
    """Concatenations and slices alternately, as dicts; ``max_bytes`` bounds inputs + output."""
    k = 0
    while k < n_cases:
        rank = int(rng.integers(2, 5))
        shape = [1] + [int(rng.integers(1, 7)) for _ in range(rank - 1)]
        axis = int(rng.integers(1, rank))
        outer, inner = _outer_inner(tuple(shape), axis)
        if k % 2 == 0:
            xs = []
            for _ in range(int(rng.integers(1, 5))):
                s = list(shape)
                s[axis] = int(rng.integers(1, 9))
                xs.append(rng.integers(-128, 128, size=s, dtype=np.int8))
            case = dict(op="concat", xs=xs, outer=outer, inner=inner,
                        sizes=[x.shape[axis] for x in xs], want=ops.concatenation_s8(xs, axis))
        else:
            x = rng.integers(-128, 128, size=shape, dtype=np.int8)
            size = int(rng.integers(1, shape[axis] + 1))
            begin = int(rng.integers(0, shape[axis] - size + 1))
            case = dict(op="slice", xs=[x], outer=outer, inner=inner, in_axis=shape[axis],
                        begin=begin, size=size, want=ops.slice_s8(x, axis, begin, size))
        if sum(x.size for x in case["xs"]) + case["want"].size <= max_bytes:
            k += 1
            yield case


def _driver_blob(c: dict) -> bytes:
    if c["op"] == "concat":
        head = _words(1, c["outer"], c["inner"], len(c["xs"]), *c["sizes"])
    else:
        head = _words(2, c["outer"], c["in_axis"], c["begin"], c["size"], c["inner"])
    return head + b"".join(x.tobytes() for x in c["xs"])


def test_concat_and_slice_kernels_match_reference_bytes(driver):
    cases = list(_random_cases(np.random.default_rng(4)))
    stdin = _words(len(cases)) + b"".join(_driver_blob(c) for c in cases)
    proc = subprocess.run([str(driver)], input=stdin, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]
    want = b"".join(np.ascontiguousarray(c["want"]).tobytes() for c in cases)
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


# -- on emulated boards: ATmega328P (params and axis sizes in flash), Cortex-M4 and M3 ---------


def _emulator_program(cases: list[dict]) -> str:
    """Each case's inputs loaded into the arena one after another, 0 to 3 bytes off a word
    boundary, the output right after them; the input pointers in RAM, as code generation
    writes them."""
    decls, calls = [], []
    for i, c in enumerate(cases):
        pos = i % 4
        ptrs = []
        for j, x in enumerate(c["xs"]):
            decls.append(emu.c_array(f"x{i}_{j}", x))
            calls.append(f"mf_test_load(mf_test_arena + {pos}, x{i}_{j}, {x.size});")
            ptrs.append(f"mf_test_arena + {pos}")
            pos += x.size
        out = f"mf_test_arena + {pos}"
        if c["op"] == "concat":
            decls += [f"static const mf_concatenation_params p{i} MF_CONST = "
                      f"{{.outer = {c['outer']}, .inner = {c['inner']}, "
                      f".num_inputs = {len(c['xs'])}}};",
                      emu.c_array(f"s{i}", np.array(c["sizes"], np.int32))]
            calls += ["{", f"    const int8_t *const in[{len(ptrs)}] = {{{', '.join(ptrs)}}};",
                      f"    mf_concatenation_s8(&p{i}, in, s{i}, {out});", "}"]
        else:
            decls.append(f"static const mf_slice_params p{i} MF_CONST = {{.outer = {c['outer']}, "
                         f".in_axis = {c['in_axis']}, .begin = {c['begin']}, "
                         f".size = {c['size']}, .inner = {c['inner']}}};")
            calls.append(f"mf_slice_s8(&p{i}, {ptrs[0]}, {out});")
        calls.append(f"mf_test_emit({i}, {out}, {c['want'].size});")
    return emu.program(decls, calls)


_SOURCES = [runtime_dir() / "src" / "concatenation_s8.c"]


def test_concat_and_slice_on_emulated_atmega328p_read_flash(tmp_path):
    cases = list(_random_cases(np.random.default_rng(5), 40, max_bytes=emu.AVR_ARENA - 3))
    outputs = emu.run_cases(tmp_path, "atmega328p", _emulator_program(cases), _SOURCES)
    emu.assert_outputs(outputs, [c["want"] for c in cases])


@pytest.mark.qemu
@pytest.mark.parametrize("board", ["qemu-mps2-an386", "qemu-mps2-an385"], ids=["m4", "m3"])
def test_concat_and_slice_on_emulated_cortex_m_match_reference(tmp_path, board):
    cases = list(_random_cases(np.random.default_rng(6), 80))
    outputs = emu.run_cases(tmp_path, board, _emulator_program(cases), _SOURCES)
    emu.assert_outputs(outputs, [c["want"] for c in cases])
