"""Sparse int8 weight storage and the numpy twins of the sparse kernels.

A pruned layer's zeros only save flash and time on a microcontroller when
they are not stored and not multiplied. Two storage formats for a fully
connected weight matrix ``W`` int8 [Cout, Cin] (row o = output channel o):

``rows`` -- per-output-channel compressed rows with 8-bit delta indices:
    ``row_nnz``  uint8 [2 * Cout]  nonzero count of each row, little-endian
                                   uint16 (so no row pointer table is needed:
                                   the kernel walks the rows in order)
    ``deltas``   uint8 [n_deltas]  per nonzero, in row order: zero or more
                                   ESCAPE bytes (each: skip 255 columns),
                                   then the gap g in [0, 254] from the column
                                   after the previous nonzero of the row (or
                                   column 0) to this one
    ``values``   int8  [nnz]       the nonzero weights, row-major
    bytes = 2 * Cout + 2 * nnz + n_escapes

``blocks`` -- block-compressed rows, 1x4 blocks along the input channels
(Cin a multiple of 4; block j = columns 4j .. 4j+3):
    ``row_nblk`` uint8 [2 * Cout]  stored blocks per row, little-endian uint16
    ``deltas``   uint8 [n_deltas]  per stored block (one with any nonzero), the
                                   gap in blocks, with ESCAPE bytes as in ``rows``
    ``values``   int8  [4 * nblk]  the stored blocks' four weights each
    bytes = 2 * Cout + 5 * nblk + n_escapes

``bitmap`` -- one bit per weight:
    ``bitmap``   uint8 [Cout * ceil(Cin / 8)]  bit j of byte b of row o set
                                   when W[o, 8 * b + j] != 0 (LSB first)
    ``values``   int8  [nnz]       the nonzero weights, row-major
    bytes = Cout * ceil(Cin / 8) + nnz

Dense storage is Cout * Cin bytes. Bias, multipliers and shifts are the same
for every format and are not counted.

The twins walk the streams exactly as the C kernels do (so a malformed stream
fails here as it would on the device) and give the same bytes as
``microfit.reference.ops.fully_connected_s8`` on the decoded weights: a zero
weight adds nothing to an integer accumulator. C:
``mf_sparse_fully_connected_s8`` and ``mf_bitmap_fully_connected_s8``
(firmware_templates/runtime/include/mf_sparse_fc_s8.h). A 1x1 convolution's
OHWI weights [Cout, 1, 1, Cin] are the same matrix: ``mf_sparse_conv1x1_s8``
walks the same rows once per output pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from microfit.quantize.fixedpoint import ROUNDING_MODES, RoundingMode, requantize_to_int8

__all__ = [
    "ESCAPE",
    "MAX_IN_FEATURES",
    "CompressedRows",
    "Bitmap",
    "encode_rows",
    "decode_rows",
    "encode_bitmap",
    "decode_bitmap",
    "dense_bytes",
    "rows_bytes",
    "bitmap_bytes",
    "sparse_fully_connected_s8",
    "bitmap_fully_connected_s8",
    "sparse_conv1x1_s8",
    "sparse_conv2d_s8",
    "BLOCK",
    "BlockRows",
    "encode_blocks",
    "decode_blocks",
    "blocks_bytes",
    "block_fully_connected_s8",
    "block_conv2d_s8",
]

ESCAPE = 255
"""A delta byte that skips 255 columns and consumes no value."""

MAX_IN_FEATURES = 0xFFFF
"""Row counts are uint16 (two bytes per row keeps the overhead small)."""


@dataclass(frozen=True)
class CompressedRows:
    """A weight matrix in the ``rows`` format (see the module docstring)."""

    out_features: int
    in_features: int
    row_nnz: np.ndarray  # uint8 [2 * out_features], little-endian uint16 counts
    deltas: np.ndarray  # uint8 [n_deltas]
    values: np.ndarray  # int8 [nnz]

    @property
    def nbytes(self) -> int:
        return int(self.row_nnz.size + self.deltas.size + self.values.size)

    @property
    def counts(self) -> np.ndarray:
        """Each row's nonzero count as integers."""
        return self.row_nnz.reshape(-1, 2).astype(np.int64) @ np.array([1, 256])


@dataclass(frozen=True)
class Bitmap:
    """A weight matrix in the ``bitmap`` format (see the module docstring)."""

    out_features: int
    in_features: int
    bitmap: np.ndarray  # uint8 [out_features * ceil(in_features / 8)]
    values: np.ndarray  # int8 [nnz]

    @property
    def nbytes(self) -> int:
        return int(self.bitmap.size + self.values.size)


def _weights(weights: np.ndarray) -> np.ndarray:
    w = np.asarray(weights)
    if w.dtype != np.int8 or w.ndim != 2:
        raise ValueError(f"weights must be int8 [out, in], got {w.dtype} {w.shape}")
    if w.shape[0] < 1 or not 1 <= w.shape[1] <= MAX_IN_FEATURES:
        raise ValueError(f"need out_features >= 1 and 1 <= in_features <= {MAX_IN_FEATURES}, "
                         f"got {w.shape}")
    return w


def _gaps(cols: np.ndarray) -> np.ndarray:
    """Columns skipped before each nonzero of one row (the column after the last one = 0)."""
    return np.diff(cols, prepend=-1) - 1


# ----------------------------------------------------------------------------
# byte counts, without building the arrays (the format choice uses these)

def dense_bytes(weights: np.ndarray) -> int:
    return int(_weights(weights).size)


def rows_bytes(weights: np.ndarray) -> int:
    w = _weights(weights)
    nnz, escapes = 0, 0
    for row in w:
        cols = np.flatnonzero(row)
        nnz += cols.size
        escapes += int((_gaps(cols) // ESCAPE).sum())
    return 2 * w.shape[0] + 2 * nnz + escapes


def bitmap_bytes(weights: np.ndarray) -> int:
    w = _weights(weights)
    return w.shape[0] * (-(-w.shape[1] // 8)) + int(np.count_nonzero(w))


# ----------------------------------------------------------------------------
# encode / decode

def _encode_positions(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each row's sorted positions (columns or block indices) as the formats store them:
    (counts as little-endian uint16 bytes, gap bytes with 255-escapes)."""
    deltas: list[int] = []
    for pos in rows:
        for gap in _gaps(pos):
            deltas.extend([ESCAPE] * int(gap // ESCAPE))
            deltas.append(int(gap % ESCAPE))
    counts = np.asarray([pos.size for pos in rows], dtype=np.uint16)
    return (np.stack([counts & 0xFF, counts >> 8], axis=1).astype(np.uint8).ravel(),
            np.asarray(deltas, dtype=np.uint8))


def _decode_positions(deltas: np.ndarray, d: int, n: int) -> tuple[np.ndarray, int]:
    """The next ``n`` positions of one row from the gap bytes at ``deltas[d:]``, as the C
    kernels walk them; returns them and the index of the next row's first gap byte."""
    pos = np.empty(n, dtype=np.int64)
    p = 0
    for k in range(n):
        while deltas[d] == ESCAPE:
            p += ESCAPE
            d += 1
        p += int(deltas[d])
        d += 1
        pos[k] = p
        p += 1
    return pos, d


def encode_rows(weights: np.ndarray) -> CompressedRows:
    """Weights int8 [Cout, Cin] -> the ``rows`` format."""
    w = _weights(weights)
    cols = [np.flatnonzero(row) for row in w]
    counts, deltas = _encode_positions(cols)
    return CompressedRows(
        out_features=w.shape[0], in_features=w.shape[1], row_nnz=counts, deltas=deltas,
        values=np.concatenate([row[c] for row, c in zip(w, cols, strict=True)]).astype(np.int8))


def _walk_rows(enc: CompressedRows):
    """Yield (row, columns, values) by walking the streams as the C kernel does."""
    d, v = 0, 0
    for o, n in enumerate(enc.counts):
        cols, d = _decode_positions(enc.deltas, d, int(n))
        if cols.size and cols[-1] >= enc.in_features:
            raise ValueError(f"row {o} indexes column {cols[-1]} of {enc.in_features}")
        yield o, cols, enc.values[v:v + int(n)]
        v += int(n)
    if d != enc.deltas.size or v != enc.values.size:
        raise ValueError("rows format: trailing deltas or values (a corrupt stream)")


def decode_rows(enc: CompressedRows) -> np.ndarray:
    """The ``rows`` format -> dense int8 [Cout, Cin]."""
    w = np.zeros((enc.out_features, enc.in_features), dtype=np.int8)
    for o, cols, vals in _walk_rows(enc):
        w[o, cols] = vals
    return w


def encode_bitmap(weights: np.ndarray) -> Bitmap:
    """Weights int8 [Cout, Cin] -> the ``bitmap`` format."""
    w = _weights(weights)
    bits = np.packbits(w != 0, axis=1, bitorder="little")
    return Bitmap(out_features=w.shape[0], in_features=w.shape[1], bitmap=bits.ravel(),
                  values=w[w != 0].astype(np.int8))


def _walk_bitmap(enc: Bitmap):
    row_bytes = -(-enc.in_features // 8)
    bits = np.unpackbits(enc.bitmap.reshape(enc.out_features, row_bytes), axis=1,
                         bitorder="little")
    if bits[:, enc.in_features:].any():
        raise ValueError("bitmap format: bits set past in_features")
    v = 0
    for o in range(enc.out_features):
        cols = np.flatnonzero(bits[o])
        yield o, cols, enc.values[v:v + cols.size]
        v += cols.size
    if v != enc.values.size:
        raise ValueError("bitmap format: value count differs from the bits set")


def decode_bitmap(enc: Bitmap) -> np.ndarray:
    """The ``bitmap`` format -> dense int8 [Cout, Cin]."""
    w = np.zeros((enc.out_features, enc.in_features), dtype=np.int8)
    for o, cols, vals in _walk_bitmap(enc):
        w[o, cols] = vals
    return w


# ----------------------------------------------------------------------------
# kernel twins

def _sparse_fc(walk, enc, x, bias, input_offset, output_offset, multiplier, shift,
               act_min, act_max, mode) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.int8 or x.ndim != 1 or x.shape[0] != enc.in_features:
        raise ValueError(f"x must be int8 [{enc.in_features}], got {x.dtype} {x.shape}")
    if mode not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {mode!r}; use one of {ROUNDING_MODES}")
    cout = enc.out_features
    m = np.broadcast_to(np.asarray(multiplier, dtype=np.int64), (cout,))
    s = np.broadcast_to(np.asarray(shift, dtype=np.int64), (cout,))
    acc = np.zeros(cout, dtype=np.int64) if bias is None else np.asarray(bias, np.int64).copy()
    xo = x.astype(np.int64) + input_offset
    for o, cols, vals in walk(enc):
        acc[o] += int(xo[cols] @ vals.astype(np.int64))
    if acc.min() < -2**31 or acc.max() > 2**31 - 1:
        raise OverflowError("sparse fully connected: accumulator leaves int32")
    return requantize_to_int8(acc, m, s, output_offset, act_min, act_max, mode)


def sparse_fully_connected_s8(x: np.ndarray, enc: CompressedRows, bias: np.ndarray | None = None,
                              *, input_offset: int, output_offset: int, multiplier, shift,
                              act_min: int = -128, act_max: int = 127,
                              mode: RoundingMode = "double") -> np.ndarray:
    """Fully connected on ``rows``-format weights; C: mf_sparse_fully_connected_s8.

    ``x`` int8 [Cin] (one row). Same bytes as ``ops.fully_connected_s8`` on
    ``decode_rows(enc)``; only the nonzeros are multiplied.
    """
    return _sparse_fc(_walk_rows, enc, x, bias, input_offset, output_offset, multiplier, shift,
                      act_min, act_max, mode)


def bitmap_fully_connected_s8(x: np.ndarray, enc: Bitmap, bias: np.ndarray | None = None,
                              *, input_offset: int, output_offset: int, multiplier, shift,
                              act_min: int = -128, act_max: int = 127,
                              mode: RoundingMode = "double") -> np.ndarray:
    """Fully connected on ``bitmap``-format weights; C: mf_bitmap_fully_connected_s8."""
    return _sparse_fc(_walk_bitmap, enc, x, bias, input_offset, output_offset, multiplier, shift,
                      act_min, act_max, mode)


def sparse_conv1x1_s8(x: np.ndarray, enc: CompressedRows, bias: np.ndarray | None = None, *,
                      input_offset: int, output_offset: int, multiplier, shift,
                      stride: int | tuple[int, int] = 1,
                      padding: int | tuple[int, int, int, int] = 0,
                      act_min: int = -128, act_max: int = 127,
                      mode: RoundingMode = "double") -> np.ndarray:
    """1x1 convolution on ``rows``-format weights [Cout, Cin]; C: mf_sparse_conv1x1_s8.

    ``x`` int8 NHWC; ``padding`` is (top, left, bottom, right) or one int.
    Same bytes as ``ops.conv2d_s8`` on ``decode_rows(enc).reshape(Cout, 1, 1, Cin)``:
    a padded pixel has no taps, so its accumulator is the bias.
    """
    x = np.asarray(x)
    if x.dtype != np.int8 or x.ndim != 4 or x.shape[3] != enc.in_features:
        raise ValueError(f"x must be int8 NHWC with {enc.in_features} channels, got "
                         f"{x.dtype} {x.shape}")
    if mode not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {mode!r}; use one of {ROUNDING_MODES}")
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    top, left, bottom, right = (padding,) * 4 if isinstance(padding, int) else padding
    n, h, w, _ = x.shape
    oh, ow = (h + top + bottom - 1) // sh + 1, (w + left + right - 1) // sw + 1
    # Zero after the offset is added == the padded taps skipped.
    xp = np.zeros((n, h + top + bottom, w + left + right, enc.in_features), dtype=np.int64)
    xp[:, top:top + h, left:left + w] = x.astype(np.int64) + input_offset
    taps = xp[:, ::sh, ::sw][:, :oh, :ow]
    cout = enc.out_features
    acc = np.zeros((n, oh, ow, cout), dtype=np.int64)
    for o, cols, vals in _walk_rows(enc):
        acc[..., o] = taps[..., cols] @ vals.astype(np.int64)
    if bias is not None:
        acc += np.asarray(bias, dtype=np.int64)
    if acc.size and (acc.min() < -2**31 or acc.max() > 2**31 - 1):
        raise OverflowError("sparse 1x1 convolution: accumulator leaves int32")
    m = np.broadcast_to(np.asarray(multiplier, dtype=np.int64), (cout,))
    s = np.broadcast_to(np.asarray(shift, dtype=np.int64), (cout,))
    return requantize_to_int8(acc, m, s, output_offset, act_min, act_max, mode)


def sparse_conv2d_s8(x: np.ndarray, enc: CompressedRows, kernel: tuple[int, int],
                     bias: np.ndarray | None = None, **conv) -> np.ndarray:
    """KxK convolution on ``rows``-format weights [Cout, k_h*k_w*Cin]; C: mf_sparse_conv2d_s8.

    The C kernel walks (ky, kx, ic) along each row; its bytes are by
    definition those of the dense convolution on the decoded OHWI weights,
    so the twin is that (``conv`` takes ``ops.conv2d_s8``'s keywords).
    """
    from . import ops

    kh, kw = kernel
    cin, rem = divmod(enc.in_features, kh * kw)
    if rem:
        raise ValueError(f"rows of {enc.in_features} columns are not a {kh}x{kw} kernel's")
    w = decode_rows(enc).reshape(enc.out_features, kh, kw, cin)
    return ops.conv2d_s8(x, w, bias, **conv)


# ----------------------------------------------------------------------------
# block-compressed rows (1x4 blocks along the input channels)

BLOCK = 4
"""Weights per block: one 32-bit load of weights and one of input on the DSP path."""


@dataclass(frozen=True)
class BlockRows:
    """A weight matrix in the ``blocks`` format (see the module docstring)."""

    out_features: int
    in_features: int
    row_nblk: np.ndarray  # uint8 [2 * out_features], little-endian uint16 block counts
    deltas: np.ndarray  # uint8 [n_deltas], gaps in blocks
    values: np.ndarray  # int8 [4 * nblk]

    @property
    def nbytes(self) -> int:
        return int(self.row_nblk.size + self.deltas.size + self.values.size)

    @property
    def counts(self) -> np.ndarray:
        return self.row_nblk.reshape(-1, 2).astype(np.int64) @ np.array([1, 256])


def _blocks(weights: np.ndarray) -> np.ndarray:
    """int8 [Cout, Cin] -> [Cout, Cin / 4, 4]; Cin must be a multiple of 4."""
    w = _weights(weights)
    if w.shape[1] % BLOCK:
        raise ValueError(f"blocks format needs in_features a multiple of {BLOCK}, got "
                         f"{w.shape[1]}; store the layer as rows or bitmap")
    return w.reshape(w.shape[0], -1, BLOCK)


def blocks_bytes(weights: np.ndarray) -> int:
    b = _blocks(weights).any(axis=2)
    nblk, escapes = 0, 0
    for row in b:
        idx = np.flatnonzero(row)
        nblk += idx.size
        escapes += int((_gaps(idx) // ESCAPE).sum())
    return 2 * b.shape[0] + (1 + BLOCK) * nblk + escapes


def encode_blocks(weights: np.ndarray) -> BlockRows:
    """Weights int8 [Cout, Cin] (Cin % 4 == 0) -> the ``blocks`` format."""
    blocks = _blocks(weights)
    idx = [np.flatnonzero(row.any(axis=1)) for row in blocks]
    counts, deltas = _encode_positions(idx)
    return BlockRows(
        out_features=blocks.shape[0], in_features=blocks.shape[1] * BLOCK, row_nblk=counts,
        deltas=deltas,
        values=np.concatenate([row[i].reshape(-1)
                               for row, i in zip(blocks, idx, strict=True)]).astype(np.int8))


def _walk_blocks(enc: BlockRows):
    """Yield (row, columns, values) walking the streams as the C kernels do."""
    d, v = 0, 0
    n_blocks = enc.in_features // BLOCK
    for o, n in enumerate(enc.counts):
        idx, d = _decode_positions(enc.deltas, d, int(n))
        if idx.size and idx[-1] >= n_blocks:
            raise ValueError(f"row {o} indexes block {idx[-1]} of {n_blocks}")
        cols = (BLOCK * idx[:, None] + np.arange(BLOCK)).reshape(-1)
        yield o, cols, enc.values[v:v + BLOCK * int(n)]
        v += BLOCK * int(n)
    if d != enc.deltas.size or v != enc.values.size:
        raise ValueError("blocks format: trailing deltas or values (a corrupt stream)")


def decode_blocks(enc: BlockRows) -> np.ndarray:
    """The ``blocks`` format -> dense int8 [Cout, Cin]."""
    w = np.zeros((enc.out_features, enc.in_features), dtype=np.int8)
    for o, cols, vals in _walk_blocks(enc):
        w[o, cols] = vals
    return w


def block_fully_connected_s8(x: np.ndarray, enc: BlockRows, bias: np.ndarray | None = None,
                             *, input_offset: int, output_offset: int, multiplier, shift,
                             act_min: int = -128, act_max: int = 127,
                             mode: RoundingMode = "double") -> np.ndarray:
    """Fully connected on ``blocks``-format weights; C: mf_block_fully_connected_s8
    (which takes the folded bias and packed requantization of the fast path instead
    of ``bias``, ``input_offset``, ``multiplier`` and ``shift``: the same bytes)."""
    return _sparse_fc(_walk_blocks, enc, x, bias, input_offset, output_offset, multiplier,
                      shift, act_min, act_max, mode)


def block_conv2d_s8(x: np.ndarray, enc: BlockRows, kernel: tuple[int, int],
                    bias: np.ndarray | None = None, **conv) -> np.ndarray:
    """KxK convolution on ``blocks``-format weights [Cout, k_h*k_w*Cin] (Cin % 4 == 0);
    C: mf_block_conv2d_s8. As ``sparse_conv2d_s8``, the dense convolution on the
    decoded OHWI weights (``conv``: ``ops.conv2d_s8``'s keywords)."""
    from . import ops

    kh, kw = kernel
    cin, rem = divmod(enc.in_features, kh * kw)
    if rem or cin % BLOCK:
        raise ValueError(f"rows of {enc.in_features} columns are not a {kh}x{kw} kernel's "
                         f"with input channels a multiple of {BLOCK}")
    w = decode_blocks(enc).reshape(enc.out_features, kh, kw, cin)
    return ops.conv2d_s8(x, w, bias, **conv)
