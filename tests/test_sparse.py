"""Sparse weight storage and the sparse fully connected kernels.

The contract: on the same pruned int8 weights, the sparse kernels give exactly
the bytes of the dense kernel (a zero adds nothing to an integer accumulator),
in numpy (microfit.reference.sparse vs ops.fully_connected_s8) and in C under
ASan+UBSan (tests/c/sparse_driver.c runs the dense, compressed-rows and bitmap
kernels on each case). Then the per-layer format choice in bytes
(microfit.codegen.sparse), the kernels cross-compiled for Cortex-M4 and
ATmega328P, and the fully connected ones run in QEMU (Cortex-M4, instructions
counted) and simavr (ATmega328P, streams in PROGMEM, cycles timed): same
bytes there too, and faster than dense at 90% sparsity. m4_instructions and
avr_cycles also produce docs/sparsity.md's latency tables.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from microfit.codegen.sparse import byte_crossover, choose_fc_storage
from microfit.quantize.fixedpoint import ROUNDING_MODES, quantize_multiplier
from microfit.reference import ops
from microfit.reference import sparse as sp
from microfit.toolchain.host import compile_host, runtime_dir

DRIVER_SRC = Path(__file__).parent / "c" / "sparse_driver.c"
SPARSE_SRCS = ("sparse_fc_s8.c", "sparse_conv1x1_s8.c", "sparse_conv2d_s8.c", "sparse_block_s8.c")
N_C_CASES = 300
SPARSITIES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0)


# --------------------------------------------------------------------------
# random pruned layers


@dataclass
class FcCase:
    x: np.ndarray
    w: np.ndarray
    bias: np.ndarray | None
    kw: dict

    def dense(self, mode: str) -> np.ndarray:
        return ops.fully_connected_s8(self.x, self.w, self.bias, mode=mode, **self.kw)


def _pruned(rng: np.random.Generator, cout: int, cin: int, sparsity: float) -> np.ndarray:
    w = rng.integers(-128 if rng.random() < 0.2 else -127, 128, (cout, cin)).astype(np.int8)
    w[w == 0] = 1  # the sparsity drawn below is then exact
    w.ravel()[rng.choice(w.size, round(sparsity * w.size), replace=False)] = 0
    shape = rng.random()
    if shape < 0.1 and cout > 1:  # whole rows pruned away
        w[rng.integers(0, cout)] = 0
    elif shape < 0.2:  # one weight at the far end of a long empty row: escapes
        r = int(rng.integers(0, cout))
        w[r] = 0
        w[r, -1] = int(rng.integers(1, 128))
    return w


def fc_case(rng: np.random.Generator) -> FcCase:
    r = rng.random()
    cin = int(rng.integers(1, 9) if r < 0.15 else rng.integers(9, 300) if r < 0.8
              else rng.integers(300, 1300))
    cout = int(rng.integers(1, 20))
    w = _pruned(rng, cout, cin, float(rng.choice(SPARSITIES)))
    x = rng.integers(-128, 128, cin).astype(np.int8)
    in_off = int(rng.integers(-127, 129))
    out_off = int(rng.integers(-128, 128))
    lo = int(rng.integers(-128, 64)) if rng.random() < 0.4 else -128
    hi = int(rng.integers(lo, 128))
    # Scale each row by its own nonzero count, so that a row of one weight
    # (the escape cases) still moves its output: a wrong column shows.
    rms = 80.0 * np.sqrt(np.maximum(1, np.count_nonzero(w, axis=1)))
    bias = None if rng.random() < 0.2 else np.round(rng.normal(0, rms)).astype(np.int32)
    mult, shift = zip(*(quantize_multiplier(float(rng.uniform(0.3, 3.0)) * 40 / r) for r in rms),
                      strict=True)
    kw = dict(input_offset=in_off, output_offset=out_off, multiplier=np.array(mult, np.int32),
              shift=np.array(shift, np.int32), act_min=lo, act_max=hi)
    return FcCase(x, w, bias, kw)


# --------------------------------------------------------------------------
# numpy: formats and twins


def test_formats_round_trip_and_count_their_bytes():
    rng = np.random.default_rng(1)
    for _ in range(150):
        c = fc_case(rng)
        rows, bits = sp.encode_rows(c.w), sp.encode_bitmap(c.w)
        assert np.array_equal(sp.decode_rows(rows), c.w)
        assert np.array_equal(sp.decode_bitmap(bits), c.w)
        assert rows.nbytes == sp.rows_bytes(c.w)
        assert bits.nbytes == sp.bitmap_bytes(c.w)
        nnz = np.count_nonzero(c.w)
        assert rows.values.size == bits.values.size == nnz
        assert bits.nbytes == c.w.shape[0] * -(-c.w.shape[1] // 8) + nnz


def test_escape_bytes_carry_long_gaps():
    w = np.zeros((2, 1000), dtype=np.int8)
    w[0, 999] = 7  # gap 999 = 3 * 255 + 234
    w[1, [0, 255, 511]] = [1, 2, 3]  # gaps 0, 254, 255 = one escape then 0
    enc = sp.encode_rows(w)
    assert enc.deltas.tolist() == [255, 255, 255, 234, 0, 254, 255, 0]
    assert enc.counts.tolist() == [1, 3]
    assert sp.rows_bytes(w) == 2 * 2 + 2 * 4 + 4


def test_corrupt_rows_stream_is_rejected():
    enc = sp.encode_rows(np.array([[0, 0, 3]], dtype=np.int8))
    bad = sp.CompressedRows(1, 2, enc.row_nnz, enc.deltas, enc.values)  # column 2 of 2
    with pytest.raises(ValueError, match="column 2"):
        sp.decode_rows(bad)


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_sparse_twins_equal_dense_reference(mode):
    rng = np.random.default_rng(2)
    for _ in range(200):
        c = fc_case(rng)
        want = c.dense(mode)
        got_rows = sp.sparse_fully_connected_s8(c.x, sp.encode_rows(c.w), c.bias, mode=mode, **c.kw)
        got_bits = sp.bitmap_fully_connected_s8(c.x, sp.encode_bitmap(c.w), c.bias, mode=mode,
                                                **c.kw)
        assert np.array_equal(got_rows, want)
        assert np.array_equal(got_bits, want)


def test_twin_sees_a_changed_weight():
    """The equality above is not vacuous: one stored value changed shows in the output."""
    rng = np.random.default_rng(3)
    w = _pruned(rng, 4, 64, 0.5)
    x = rng.integers(-128, 128, 64).astype(np.int8)
    kw = dict(input_offset=0, output_offset=0, multiplier=1 << 30, shift=-6)
    enc = sp.encode_rows(w)
    values = enc.values.copy()
    values[0] = np.int8(-values[0]) if values[0] != -128 else 127
    bad = sp.CompressedRows(enc.out_features, enc.in_features, enc.row_nnz, enc.deltas, values)
    assert not np.array_equal(sp.sparse_fully_connected_s8(x, bad, **kw),
                              ops.fully_connected_s8(x, w, **kw))


# --------------------------------------------------------------------------
# C, host, ASan + UBSan


def _pack(c: FcCase) -> bytes:
    rows, bits = sp.encode_rows(c.w), sp.encode_bitmap(c.w)
    cout, cin = c.w.shape
    head = [cin, cout, c.kw["input_offset"], c.kw["output_offset"], c.kw["act_min"],
            c.kw["act_max"], int(c.bias is not None), rows.deltas.size, rows.values.size]
    parts = [struct.pack("<10i", 1, *head), c.x.tobytes(), c.w.tobytes()]
    if c.bias is not None:
        parts.append(c.bias.astype("<i4").tobytes())
    parts += [c.kw["multiplier"].astype("<i4").tobytes(), c.kw["shift"].astype("<i4").tobytes(),
              rows.row_nnz.tobytes(), rows.deltas.tobytes(), rows.values.tobytes(),
              bits.bitmap.tobytes()]
    return b"".join(parts)


@pytest.fixture(scope="module")
def sparse_driver(tmp_path_factory):
    built: dict[str, Path] = {}

    def get(mode: str) -> Path:
        if mode not in built:
            out = tmp_path_factory.mktemp("sparse") / f"sparse_driver_{mode}"
            src = runtime_dir() / "src"
            defines = {"MF_SINGLE_ROUNDING": "1"} if mode == "single" else {}
            built[mode] = compile_host(
                [DRIVER_SRC, src / "fully_connected_s8.c", src / "conv2d_s8.c",
                 *(src / name for name in SPARSE_SRCS)], out,
                [runtime_dir() / "include"], defines=defines, extra_flags=("-pedantic",))
        return built[mode]
    return get


def _run(driver: Path, cases: list[FcCase]) -> list[np.ndarray]:
    proc = subprocess.run([str(driver)], input=b"".join(_pack(c) for c in cases),
                          capture_output=True, timeout=120,
                          env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]
    sizes = [3 * c.w.shape[0] for c in cases]
    assert len(proc.stdout) == sum(sizes)
    out = np.frombuffer(proc.stdout, dtype=np.int8)
    return np.split(out, np.cumsum(sizes)[:-1])


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_c_sparse_kernels_equal_dense_kernel_and_reference(sparse_driver, mode):
    rng = np.random.default_rng(10 + ROUNDING_MODES.index(mode))
    cases = [fc_case(rng) for _ in range(N_C_CASES)]
    for i, (c, got) in enumerate(zip(cases, _run(sparse_driver(mode), cases), strict=True)):
        dense_c, rows_c, bitmap_c = got.reshape(3, -1)
        want = c.dense(mode)
        info = f"case {i}: shape {c.w.shape}, sparsity {1 - np.count_nonzero(c.w) / c.w.size:.2f}"
        assert np.array_equal(dense_c, want), info
        assert np.array_equal(rows_c, want), info
        assert np.array_equal(bitmap_c, want), info


def test_c_escapes_land_on_the_right_column(sparse_driver):
    """Rows of one weight just below, at and past multiples of 255: out = x[col] + offset."""
    cols = [0, 253, 254, 255, 256, 509, 510, 511, 765, 1000, 1019]
    w = np.zeros((len(cols), 1020), dtype=np.int8)
    w[np.arange(len(cols)), cols] = 1
    x = ((np.arange(1020) * 7) % 256 - 128).astype(np.int8)
    c = FcCase(x, w, None, dict(input_offset=0, output_offset=0,
                                multiplier=np.full(len(cols), 1 << 30, np.int32),
                                shift=np.ones(len(cols), np.int32), act_min=-128, act_max=127))
    assert np.array_equal(c.dense("double"), x[cols])  # the identity requantization
    dense_c, rows_c, bitmap_c = _run(sparse_driver("double"), [c])[0].reshape(3, -1)
    assert np.array_equal(rows_c, x[cols])
    assert np.array_equal(bitmap_c, x[cols])


def test_c_driver_catches_a_corrupt_stream(sparse_driver):
    """A delta pointing past the row is caught by ASan: the harness can fail."""
    w = np.zeros((1, 4), dtype=np.int8)
    w[0, 3] = 1
    c = FcCase(np.ones(4, np.int8), w, None,
               dict(input_offset=0, output_offset=0, multiplier=np.array([1 << 30], np.int32),
                    shift=np.array([0], np.int32), act_min=-128, act_max=127))
    blob = bytearray(_pack(c))
    delta_at = 10 * 4 + 4 + 4 + 4 + 4 + 2  # op and header, x, w, multiplier, shift, row_nnz
    assert blob[delta_at] == 3
    blob[delta_at] = 200
    proc = subprocess.run([str(sparse_driver("double"))], input=bytes(blob), capture_output=True,
                          timeout=60, env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})
    assert proc.returncode != 0
    assert b"AddressSanitizer" in proc.stderr


@dataclass
class Conv1x1Case:
    x: np.ndarray  # NHWC, N = 1
    w: np.ndarray  # [Cout, Cin]
    bias: np.ndarray | None
    stride: tuple[int, int]
    pad: tuple[int, int, int, int]
    kw: dict

    def dense(self, mode: str) -> np.ndarray:
        cout, cin = self.w.shape
        return ops.conv2d_s8(self.x, self.w.reshape(cout, 1, 1, cin), self.bias, mode=mode,
                             stride=self.stride, padding=self.pad, **self.kw)

    def pack(self) -> bytes:
        rows = sp.encode_rows(self.w)
        _, h, w, cin = self.x.shape
        cout = self.w.shape[0]
        oh, ow = self.dense("double").shape[1:3]
        head = [h, w, cin, oh, ow, cout, *self.stride, self.pad[0], self.pad[1],
                self.kw["input_offset"], self.kw["output_offset"], self.kw["act_min"],
                self.kw["act_max"], int(self.bias is not None), rows.deltas.size,
                rows.values.size]
        parts = [struct.pack("<18i", 2, *head), self.x.tobytes(), self.w.tobytes()]
        if self.bias is not None:
            parts.append(self.bias.astype("<i4").tobytes())
        parts += [self.kw["multiplier"].astype("<i4").tobytes(),
                  self.kw["shift"].astype("<i4").tobytes(), rows.row_nnz.tobytes(),
                  rows.deltas.tobytes(), rows.values.tobytes()]
        return b"".join(parts)


def conv1x1_case(rng: np.random.Generator) -> Conv1x1Case:
    fc = fc_case(rng)  # its weights, offsets, requantization and range
    cin = fc.w.shape[1] if fc.w.shape[1] <= 300 else int(rng.integers(1, 40))
    w = _pruned(rng, fc.w.shape[0], cin, float(rng.choice(SPARSITIES)))
    h, wd = (int(v) for v in rng.integers(1, 7, 2))
    stride = tuple(int(v) for v in rng.integers(1, 4, 2))
    pad = tuple(int(v) for v in rng.integers(0, 3, 4)) if rng.random() < 0.4 else (0, 0, 0, 0)
    x = rng.integers(-128, 128, (1, h, wd, cin)).astype(np.int8)
    return Conv1x1Case(x, w, fc.bias, stride, pad, fc.kw)


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_sparse_conv1x1_twin_and_c_equal_dense_conv(sparse_driver, mode):
    rng = np.random.default_rng(20 + ROUNDING_MODES.index(mode))
    cases = [conv1x1_case(rng) for _ in range(150)]
    proc = subprocess.run([str(sparse_driver(mode))], input=b"".join(c.pack() for c in cases),
                          capture_output=True, timeout=120,
                          env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]
    wants = [c.dense(mode) for c in cases]
    sizes = [2 * want.size for want in wants]
    assert len(proc.stdout) == sum(sizes)
    outs = np.split(np.frombuffer(proc.stdout, dtype=np.int8), np.cumsum(sizes)[:-1])
    for i, (c, want, got) in enumerate(zip(cases, wants, outs, strict=True)):
        info = f"case {i}: x {c.x.shape}, w {c.w.shape}, stride {c.stride}, pad {c.pad}"
        twin = sp.sparse_conv1x1_s8(c.x, sp.encode_rows(c.w), c.bias, mode=mode,
                                    stride=c.stride, padding=c.pad, **c.kw)
        assert np.array_equal(twin, want), info
        dense_c, sparse_c = got.reshape(2, -1)
        assert np.array_equal(dense_c, want.ravel()), info
        assert np.array_equal(sparse_c, want.ravel()), info


# --------------------------------------------------------------------------
# cross-compilers

CROSS = {
    "arm-none-eabi-gcc": (["-mcpu=cortex-m4", "-mthumb", "-O2"],
                          "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi"),
    "avr-gcc": (["-mmcu=atmega328p", "-Os"], "apt-get install gcc-avr avr-libc"),
}


@pytest.mark.parametrize("defines", [[], ["-DMF_SINGLE_ROUNDING"], ["-DMF_CONST_IN_RAM"]],
                         ids=["default", "single", "const-in-ram"])
@pytest.mark.parametrize("compiler", list(CROSS))
def test_sparse_kernels_compile_for_microcontrollers(tmp_path, compiler, defines):
    flags, package = CROSS[compiler]
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} not installed: {package}")
    cmd = [compiler, *flags, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", *defines,
           f"-I{runtime_dir() / 'include'}", "-c",
           *(str(runtime_dir() / "src" / name) for name in SPARSE_SRCS)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in tmp_path.glob("*.o")} == {n.replace(".c", ".o") for n in SPARSE_SRCS}


# --------------------------------------------------------------------------
# the format choice, in bytes


def test_ninety_percent_sparse_layer_is_stored_sparse_with_fewer_bytes():
    w = _pruned(np.random.default_rng(4), 32, 128, 0.9)
    choice = choose_fc_storage(w)
    assert choice.format == "rows"
    assert choice.bytes_sparse < choice.bytes_dense == w.size
    assert sum(a.size for a in choice.arrays.values()) == choice.bytes_sparse
    assert choice.kernel == "mf_sparse_fully_connected_s8"
    assert "rows" in choice.reason and str(choice.bytes_dense) in choice.reason
    enc = sp.CompressedRows(32, 128, **choice.arrays)
    assert np.array_equal(sp.decode_rows(enc), w)


def test_ten_percent_sparse_layer_stays_dense():
    w = _pruned(np.random.default_rng(5), 32, 128, 0.1)
    choice = choose_fc_storage(w)
    assert choice.format == "dense"
    assert choice.bytes_sparse > choice.bytes_dense
    assert choice.arrays["weights"] is w or np.array_equal(choice.arrays["weights"], w)
    assert choice.reason.startswith("dense")


def test_mid_sparsity_picks_the_bitmap():
    choice = choose_fc_storage(_pruned(np.random.default_rng(6), 32, 128, 0.6))
    assert choice.format == "bitmap"
    assert choice.candidates["bitmap"] < min(choice.candidates["rows"], choice.bytes_dense)


def test_allowed_formats_restrict_the_choice():
    w = _pruned(np.random.default_rng(7), 32, 128, 0.6)
    assert choose_fc_storage(w, allowed=("rows",)).format == "rows"
    assert choose_fc_storage(w, allowed=()).format == "dense"
    with pytest.raises(ValueError, match="unknown sparse formats"):
        choose_fc_storage(w, allowed=("csr",))


def test_byte_crossovers_match_the_formulas():
    # rows beats dense once 2*out + 2*nnz < out*in, i.e. density < 1/2 - 1/in;
    # bitmap once in/8 + nnz/out < in, i.e. density < 7/8.
    assert byte_crossover(16, 128, "rows") == pytest.approx(0.51, abs=0.011)
    assert byte_crossover(16, 128, "bitmap") == pytest.approx(0.13, abs=0.011)


# --------------------------------------------------------------------------
# the real AVR path: constants in PROGMEM, 16-bit int, under simavr

AVR_SHAPE = (16, 64)
AVR_SPARSITIES = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95)

AVR_MAIN = r"""
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/pgmspace.h>
#include <avr/sleep.h>
#include <stdint.h>
#include <string.h>

#include "mf_fully_connected_s8.h"
#include "mf_sparse_fc_s8.h"

/*
 * Timer1 at clk/64 (a 64-cycle resolution, 4.2 M cycles before it wraps).
 * TCNT1 is read while the timer runs: simavr reads a stopped timer as 0.
 */
static void timer_start(void)
{
    TCCR1A = 0; TCCR1B = 0; TCNT1 = 0; TIFR1 = (uint8_t)(1 << TOV1);
    TCCR1B = (uint8_t)((1 << CS11) | (1 << CS10));
}

static uint32_t timer_stop(void)
{
    uint16_t t = TCNT1;
    TCCR1B = 0;
    return (TIFR1 & (1 << TOV1)) ? 0xFFFFFFFFul : 64ul * t;
}

static void put(char c)
{
    while (!(UCSR0A & (1 << UDRE0))) {
    }
    UDR0 = (uint8_t)c;
}

static void put_hex(uint32_t v, uint8_t digits)
{
    while (digits-- > 0) {
        put("0123456789abcdef"[(v >> (4 * digits)) & 0xF]);
    }
}

/* One line per kernel run: "R<case><kernel> <cycles> <output hex>". */
static void report(uint8_t c, uint8_t k, uint32_t cycles, const int8_t *out, uint8_t n)
{
    uint8_t i;
    put('R'); put_hex(c, 2); put_hex(k, 1); put(' '); put_hex(cycles, 8); put(' ');
    for (i = 0; i < n; ++i) {
        put_hex((uint8_t)out[i], 2);
    }
    put('\n');
}

static int8_t x[%(cin)d];
static int8_t out[%(cout)d];

%(cases)s

int main(void)
{
    uint32_t cycles;
    UBRR0 = 0;
    UCSR0B = (uint8_t)(1 << TXEN0);
    UCSR0C = (uint8_t)(3 << UCSZ00);
%(calls)s
    put('E'); put('N'); put('D'); put('\n');
    cli();
    sleep_cpu();
    for (;;) {
    }
}
"""


M4_MAIN = r"""
#include <stdint.h>
#include <string.h>

#include "mf_baremetal.h"
#include "mf_fully_connected_s8.h"
#include "mf_platform.h"
#include "mf_sparse_fc_s8.h"

/* One line per kernel run: "R<case><kernel> <output hex>"; counts come from the marks. */
static void report(uint8_t c, uint8_t k, const int8_t *out, uint32_t n)
{
    uint8_t tag[2];
    tag[0] = c;
    tag[1] = k;
    mf_putc('R');
    mf_put_hex(tag, 2);
    mf_putc(' ');
    mf_put_hex(out, n);
    mf_putc('\n');
}

static int8_t x[%(cin)d];
static int8_t out[%(cout)d];

%(cases)s

int main(void)
{
%(calls)s
    mf_puts("END\n");
    return 0;
}
"""


def _c_array(ctype: str, name: str, a: np.ndarray) -> str:
    body = ", ".join(str(int(v)) for v in np.asarray(a).ravel())
    return f"static const {ctype} {name}[] MF_CONST = {{{body}}};"


def _program(cases: list[FcCase], target: str) -> str:
    """A C program running dense, rows and bitmap FC on each case, for 'avr' or 'm4'."""
    decls, calls = [], []
    cout, cin = AVR_SHAPE
    for i, c in enumerate(cases):
        rows, bits = sp.encode_rows(c.w), sp.encode_bitmap(c.w)
        kw = c.kw
        decls += [
            f"static const mf_fully_connected_params p{i} MF_CONST = {{{cin}, {cout}, "
            f"{kw['input_offset']}, {kw['output_offset']}, {kw['act_min']}, {kw['act_max']}}};",
            _c_array("int8_t", f"x{i}", c.x), _c_array("int8_t", f"w{i}", c.w),
            _c_array("int32_t", f"b{i}", c.bias if c.bias is not None else np.zeros(cout)),
            _c_array("int32_t", f"m{i}", kw["multiplier"]), _c_array("int32_t", f"s{i}", kw["shift"]),
            _c_array("uint8_t", f"n{i}", rows.row_nnz), _c_array("uint8_t", f"d{i}", rows.deltas),
            _c_array("int8_t", f"v{i}", rows.values), _c_array("uint8_t", f"bm{i}", bits.bitmap)]
        args = f"b{i}, m{i}, s{i}, out"
        for k, call in enumerate([f"mf_fully_connected_s8(&p{i}, x, w{i}, {args})",
                                  f"mf_sparse_fully_connected_s8(&p{i}, x, n{i}, d{i}, v{i}, {args})",
                                  f"mf_bitmap_fully_connected_s8(&p{i}, x, bm{i}, v{i}, {args})"]):
            if target == "avr":
                calls.append(f"    memcpy_P(x, x{i}, sizeof x); timer_start(); {call}; "
                             f"cycles = timer_stop(); report({i}, {k}, cycles, out, {cout});")
            else:
                calls.append(f"    memcpy(x, x{i}, sizeof x); mf_icount_mark(); {call}; "
                             f"mf_icount_mark(); report({i}, {k}, out, {cout});")
    template = AVR_MAIN if target == "avr" else M4_MAIN
    return template % dict(cin=cin, cout=cout, cases="\n".join(decls), calls="\n".join(calls))


def _timing_cases(sparsities) -> list[FcCase]:
    rng = np.random.default_rng(30)
    cases = []
    for s in sparsities:
        c = fc_case(rng)
        w = _pruned(rng, *AVR_SHAPE, 0.0)
        w.ravel()[rng.choice(w.size, round(s * w.size), replace=False)] = 0
        x = rng.integers(-128, 128, AVR_SHAPE[1]).astype(np.int8)
        rms = 80.0 * np.sqrt(np.maximum(1, np.count_nonzero(w, axis=1)))
        mult, shift = zip(*(quantize_multiplier(40 / r) for r in rms), strict=True)
        kw = dict(c.kw, multiplier=np.array(mult, np.int32), shift=np.array(shift, np.int32))
        cases.append(FcCase(x, w, rng.integers(-500, 500, AVR_SHAPE[0]).astype(np.int32), kw))
    return cases


def m4_instructions(tmp_path: Path, sparsities=AVR_SPARSITIES) -> dict[float, tuple[int, int, int]]:
    """Run dense, rows and bitmap FC in QEMU (Cortex-M4, -O2); assert bytes; count instructions."""
    from microfit.icount import build_baremetal, run_counted

    cases = _timing_cases(sparsities)
    src = tmp_path / "sparse_m4.c"
    src.write_text(_program(cases, "m4"))
    rt = runtime_dir()
    elf = build_baremetal([src, rt / "src" / "fully_connected_s8.c", rt / "src" / SPARSE_SRCS[0]],
                          tmp_path / "sparse_m4.elf", "qemu-mps2-an386", [rt / "include"])
    run = run_counted(elf, "qemu-mps2-an386", timeout=120)
    lines = run.uart.decode(errors="replace").splitlines()
    assert lines and lines[-1] == "END", run.uart[-2000:]
    counts = run.regions()
    assert len(counts) == len(lines) - 1 == 3 * len(cases)
    for n, line in enumerate(lines[:-1]):
        m = re.fullmatch(r"R([0-9a-f]{2})([0-9a-f]{2}) ([0-9a-f]*)", line)
        assert m, line
        i, k = int(m.group(1), 16), int(m.group(2), 16)
        assert (i, k) == divmod(n, 3)
        got = np.frombuffer(bytes.fromhex(m.group(3)), dtype=np.int8)
        assert np.array_equal(got, cases[i].dense("double")), (i, k)
    return {s: tuple(counts[3 * i:3 * i + 3]) for i, s in enumerate(sparsities)}


@pytest.mark.qemu
def test_sparse_kernels_on_emulated_cortex_m4(tmp_path):
    """Same bytes as dense in QEMU; at 90% sparsity both sparse kernels run fewer instructions."""
    for tool, package in (("arm-none-eabi-gcc", "gcc-arm-none-eabi libnewlib-arm-none-eabi"),
                          ("qemu-system-arm", "qemu-system-arm")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed: apt-get install {package}")
    counts = m4_instructions(tmp_path)
    dense, rows, bitmap = counts[0.9]
    assert rows < dense and bitmap < dense
    assert counts[0.0][1] > counts[0.0][0]  # sparse storage of dense weights costs time


def avr_cycles(tmp_path: Path, sparsities=AVR_SPARSITIES) -> dict[float, tuple[int, int, int]]:
    """Run dense, rows and bitmap FC on simavr; assert bytes; return cycles per sparsity."""
    cases = _timing_cases(sparsities)
    src = tmp_path / "sparse_avr.c"
    src.write_text(_program(cases, "avr"))
    elf = tmp_path / "sparse_avr.elf"
    rt = runtime_dir()
    cmd = ["avr-gcc", "-mmcu=atmega328p", "-Os", "-std=c99", "-Wall", "-Wextra", "-Werror",
           "-ffunction-sections", "-fdata-sections", "-Wl,--gc-sections", f"-I{rt / 'include'}",
           str(src), str(rt / "src" / "fully_connected_s8.c"), str(rt / "src" / SPARSE_SRCS[0]),
           "-o", str(elf)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    sim = subprocess.run(["simavr", "-m", "atmega328p", "-f", "16000000", str(elf)],
                         capture_output=True, text=True, timeout=60)
    text = re.sub(r"\x1b\[[0-9;]*m", "", sim.stderr)
    assert "END" in text, sim.stderr[-2000:]
    runs = {}
    line = r"R([0-9a-f]{2})([0-9a-f]) ([0-9a-f]{8}) ([0-9a-f]{" + str(2 * AVR_SHAPE[0]) + "})"
    for m in re.finditer(line, re.sub(r"\.?\n", "", text)):
        runs[int(m.group(1), 16), int(m.group(2))] = (
            int(m.group(3), 16), np.frombuffer(bytes.fromhex(m.group(4)), dtype=np.int8))
    assert len(runs) == 3 * len(cases), text[-2000:]
    assert all(cycles != 0xFFFFFFFF for cycles, _ in runs.values()), "timer wrapped"
    for i, c in enumerate(cases):
        want = c.dense("double")
        for k in range(3):
            assert np.array_equal(runs[i, k][1], want), (i, k)
    return {s: tuple(runs[i, k][0] for k in range(3)) for i, s in enumerate(sparsities)}


def test_sparse_kernels_on_emulated_atmega328p(tmp_path):
    """PROGMEM streams, 16-bit int: same bytes as dense; at 90% both sparse kernels are faster."""
    for tool, package in (("avr-gcc", "gcc-avr avr-libc"), ("simavr", "simavr")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed: apt-get install {package}")
    cycles = avr_cycles(tmp_path)
    dense, rows, bitmap = cycles[0.9]
    assert rows < dense and bitmap < dense
    # The sparse kernels' time follows the nonzeros; the portable dense kernel's does not
    # (and with 16-bit products they beat its 32-bit multiplies even at 0% on AVR).
    assert cycles[0.95][1] < cycles[0.0][1] / 4 and cycles[0.95][2] < cycles[0.0][2] / 2
    assert max(c[0] for c in cycles.values()) < 1.05 * min(c[0] for c in cycles.values())
