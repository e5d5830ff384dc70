"""Block-compressed rows (1x4 blocks along the input channels) and their kernels.

The contract as for every sparse kernel: on the same pruned int8 weights the
block kernels give exactly the dense kernel's bytes. Here: the format and its
byte count (microfit.reference.sparse), the numpy twins against ops, and the C
kernels under ASan+UBSan (tests/c/sparse_block_driver.c: the portable
mf_block_conv2d_s8, the Cortex-M mf_block_conv2d_s8_fast and
mf_block_fully_connected_s8) built three ways: plain C, with the DSP
instructions emulated (MF_SIMD_EMULATE, the SMLAD path), and single rounding.
Whole models with block-pruned weights run in QEMU (Cortex-M4) and simavr in
test_sparse_codegen.py's style below.
"""

from __future__ import annotations

import os
import struct
import subprocess
from dataclasses import dataclass

import numpy as np
import pytest

from microfit.codegen import layouts
from microfit.codegen.sparse import choose_fc_storage
from microfit.quantize.fixedpoint import quantize_multiplier
from microfit.reference import ops
from microfit.reference import sparse as sp
from microfit.toolchain.host import compile_host, runtime_dir

DRIVER_SRC = __import__("pathlib").Path(__file__).parent / "c" / "sparse_block_driver.c"
SPARSITIES = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0)


def _block_pruned(rng: np.random.Generator, cout: int, k: int, sparsity: float) -> np.ndarray:
    """int8 [cout, k] (k % 4 == 0) with ``sparsity`` of its 1x4 blocks zeroed, sometimes a few
    zeros inside kept blocks, an empty row, or one block at the end of a long empty row."""
    w = rng.integers(-128 if rng.random() < 0.2 else -127, 128, (cout, k)).astype(np.int8)
    w[w == 0] = 1
    blocks = w.reshape(cout, -1, 4)
    nb = blocks.shape[1]
    flat = blocks.reshape(-1, 4)
    flat[rng.choice(flat.shape[0], round(sparsity * flat.shape[0]), replace=False)] = 0
    if rng.random() < 0.3:
        w.ravel()[rng.choice(w.size, w.size // 10, replace=False)] = 0
    shape = rng.random()
    if shape < 0.1 and cout > 1:
        w[rng.integers(0, cout)] = 0
    elif shape < 0.25:
        r = int(rng.integers(0, cout))
        w[r] = 0
        w[r, 4 * (nb - 1) + int(rng.integers(0, 4))] = int(rng.integers(1, 128))
    return w


@dataclass
class BlockCase:
    x: np.ndarray  # NHWC, N = 1
    w: np.ndarray  # OHWI
    bias: np.ndarray
    conv: dict  # stride, dilation, padding (top, left, bottom, right)
    kw: dict  # offsets, multiplier, shift, activation range
    small: bool

    def dense(self, mode: str) -> np.ndarray:
        return ops.conv2d_s8(self.x, self.w, self.bias, mode=mode, **self.conv, **self.kw)

    def pack(self, mode: str) -> bytes:
        cout, kh, kw, cin = self.w.shape
        rows = self.w.reshape(cout, -1)
        enc = sp.encode_blocks(rows)
        folded = layouts.fold_bias(self.bias, rows, self.kw["input_offset"])
        requant = layouts.pack_requant(self.kw["multiplier"], self.kw["shift"],
                                       self.kw["output_offset"], self.small, weights=rows,
                                       bias=folded, mode=mode)
        _, h, wd, _ = self.x.shape
        oh, ow = self.dense(mode).shape[1:3]
        c = self.conv
        head = [h, wd, cin, oh, ow, cout, kh, kw, *c["stride"], *c["dilation"],
                c["padding"][0], c["padding"][1], self.kw["input_offset"],
                self.kw["output_offset"], self.kw["act_min"], self.kw["act_max"],
                enc.deltas.size, enc.values.size]
        return b"".join([struct.pack("<20i", *head), self.x.tobytes(), enc.row_nblk.tobytes(),
                         enc.deltas.tobytes(), enc.values.tobytes(),
                         folded.astype("<i4").tobytes(), requant.astype("<i4").tobytes()])

    @property
    def is_fc(self) -> bool:
        return self.x.shape[1:3] == (1, 1) and self.w.shape[1:3] == (1, 1) \
            and self.conv["padding"] == (0, 0, 0, 0)


def block_case(rng: np.random.Generator) -> BlockCase:
    cout = int(rng.integers(1, 10))
    if rng.random() < 0.3:  # a fully connected layer, up to 330 blocks a row (escapes)
        cin = 4 * int(rng.integers(1, 330))
        h = wd = kh = kw = 1
        conv = dict(stride=(1, 1), dilation=(1, 1), padding=(0, 0, 0, 0))
    else:
        cin = 4 * int(rng.integers(1, 7))
        while True:
            h, wd, kh, kw = (int(v) for v in rng.integers(1, [8, 8, 4, 4]))
            stride = tuple(int(v) for v in rng.integers(1, 3, 2))
            dil = tuple(int(v) for v in rng.integers(1, 3, 2))
            pad = tuple(int(v) for v in rng.integers(0, 3, 4)) if rng.random() < 0.6 \
                else (0, 0, 0, 0)
            if (h + pad[0] + pad[2] - dil[0] * (kh - 1) >= 1
                    and wd + pad[1] + pad[3] - dil[1] * (kw - 1) >= 1):
                break
        conv = dict(stride=stride, dilation=dil, padding=pad)
    rows = _block_pruned(rng, cout, kh * kw * cin, float(rng.choice(SPARSITIES)))
    w = rows.reshape(cout, kh, kw, cin)
    x = rng.integers(-128, 128, (1, h, wd, cin)).astype(np.int8)
    rms = 80.0 * np.sqrt(np.maximum(1, np.count_nonzero(rows, axis=1)))
    bias = np.round(rng.normal(0, rms)).astype(np.int32)
    mult, shift = (np.array(v, np.int32) for v in zip(
        *(quantize_multiplier(float(rng.uniform(0.3, 3.0)) * 40 / r) for r in rms), strict=True))
    if rng.random() < 0.1:  # a channel outside the fast shifts: the layer takes mf_requantize
        c = int(rng.integers(0, cout))
        mult[c], shift[c] = quantize_multiplier(float(rng.uniform(0.3, 4.0)))
    lo = int(rng.integers(-128, 64)) if rng.random() < 0.4 else -128
    kw_ = dict(input_offset=int(rng.integers(-127, 129)), output_offset=int(rng.integers(-128, 128)),
               multiplier=mult, shift=shift, act_min=lo, act_max=int(rng.integers(lo, 128)))
    folded = layouts.fold_bias(bias, rows, kw_["input_offset"])
    small = layouts.accumulators_small(folded, rows) and rng.random() < 0.7
    return BlockCase(x, w, bias, conv, kw_, small)


# --------------------------------------------------------------------------
# numpy: format, bytes, twins


def test_blocks_round_trip_and_count_their_bytes():
    rng = np.random.default_rng(1)
    for _ in range(100):
        w = _block_pruned(rng, int(rng.integers(1, 8)), 4 * int(rng.integers(1, 400)),
                          float(rng.choice(SPARSITIES)))
        enc = sp.encode_blocks(w)
        np.testing.assert_array_equal(sp.decode_blocks(enc), w)
        nblk = int(enc.counts.sum())
        assert enc.nbytes == sp.blocks_bytes(w) == 2 * w.shape[0] + 5 * nblk + \
            int((enc.deltas == sp.ESCAPE).sum())
        assert enc.values.size == 4 * nblk


def test_block_gaps_of_255_and_more_take_escape_bytes():
    w = np.zeros((1, 4 * 1000), np.int8)
    for blk in (0, 255, 511, 999):  # gaps 0, 254, 255, 487
        w[0, 4 * blk + 2] = 7
    enc = sp.encode_blocks(w)
    assert enc.deltas.tolist() == [0, 254, 255, 0, 255, 232]
    np.testing.assert_array_equal(sp.decode_blocks(enc), w)


def test_blocks_need_input_channels_in_fours():
    with pytest.raises(ValueError, match="multiple of 4, got 6.*rows or bitmap"):
        sp.encode_blocks(np.ones((2, 6), np.int8))


def test_corrupt_blocks_stream_is_rejected():
    enc = sp.encode_blocks(np.ones((2, 8), np.int8))
    bad = sp.BlockRows(enc.out_features, enc.in_features, enc.row_nblk,
                       np.array([0, 0, 0, 5], np.uint8), enc.values)
    with pytest.raises(ValueError, match="row 1 indexes block 6 of 2"):
        sp.decode_blocks(bad)


@pytest.mark.parametrize("mode", ["double", "single"])
def test_block_twins_equal_dense_reference(mode):
    rng = np.random.default_rng(2)
    for i in range(120):
        c = block_case(rng)
        rows = c.w.reshape(c.w.shape[0], -1)
        enc = sp.encode_blocks(rows)
        want = c.dense(mode)
        got = sp.block_conv2d_s8(c.x, enc, c.w.shape[1:3], c.bias, mode=mode, **c.conv, **c.kw)
        np.testing.assert_array_equal(got, want, err_msg=f"case {i}")
        if c.is_fc:
            fc = sp.block_fully_connected_s8(c.x.reshape(-1), enc, c.bias, mode=mode, **c.kw)
            np.testing.assert_array_equal(fc, want.reshape(-1), err_msg=f"case {i}")


def test_block_format_wins_on_full_blocks_and_loses_on_scattered_zeros():
    rng = np.random.default_rng(3)
    blocky = _block_pruned(rng, 16, 256, 0.8)
    blocky[blocky == 0] = 0
    choice = choose_fc_storage(blocky, allowed=("rows", "bitmap", "blocks"))
    assert choice.format == "blocks" and choice.bytes_chosen < choice.candidates["rows"]
    scattered = rng.integers(1, 100, (16, 256)).astype(np.int8)
    scattered.ravel()[rng.choice(scattered.size, round(0.9 * scattered.size), replace=False)] = 0
    assert choose_fc_storage(scattered, allowed=("rows", "bitmap", "blocks")).format == "rows"


# --------------------------------------------------------------------------
# C under ASan+UBSan

BUILDS = {"plain": {}, "dsp": {"MF_SIMD_EMULATE": "1"},
          "dsp-single": {"MF_SIMD_EMULATE": "1", "MF_SINGLE_ROUNDING": "1"}}


@pytest.fixture(scope="module")
def block_driver(tmp_path_factory):
    built = {}

    def get(name: str):
        if name not in built:
            out = tmp_path_factory.mktemp("block") / f"block_driver_{name}"
            built[name] = compile_host([DRIVER_SRC, runtime_dir() / "src" / "sparse_block_s8.c"],
                                       out, [runtime_dir() / "include"], defines=BUILDS[name],
                                       extra_flags=("-pedantic",))
        return built[name]
    return get


@pytest.mark.parametrize("build", list(BUILDS))
def test_c_block_kernels_equal_dense_reference(block_driver, build):
    mode = "single" if build.endswith("single") else "double"
    rng = np.random.default_rng(10 + list(BUILDS).index(build))
    cases = [block_case(rng) for _ in range(200)]
    assert sum(c.is_fc for c in cases) > 30 and sum(not c.small for c in cases) > 30
    proc = subprocess.run([str(block_driver(build))],
                          input=b"".join(c.pack(mode) for c in cases), capture_output=True,
                          timeout=300, env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]
    wants = [c.dense(mode) for c in cases]
    sizes = [(3 if c.is_fc else 2) * want.size for c, want in zip(cases, wants, strict=True)]
    assert len(proc.stdout) == sum(sizes)
    outs = np.split(np.frombuffer(proc.stdout, dtype=np.int8), np.cumsum(sizes)[:-1])
    for i, (c, want, got) in enumerate(zip(cases, wants, outs, strict=True)):
        info = f"case {i}: x {c.x.shape}, w {c.w.shape}, {c.conv}, small {c.small}"
        for k, part in enumerate(got.reshape(-1, want.size)):
            np.testing.assert_array_equal(part, want.ravel(), err_msg=f"{info}, kernel {k}")
