"""Per-layer choice of how a fully connected layer's weights are stored in flash.

Sparsity only pays on a microcontroller when the stored bytes shrink, so the
choice is made in bytes (weights + indices; bias, multipliers and shifts are
the same whatever the format): the format with the fewest bytes wins, and the
layer stays dense unless a sparse format is strictly smaller. The reason
string says what was compared, so the report can show why.

Latency is not part of this choice yet: the sparse kernels skip the zeros, but
where their per-nonzero overhead beats the dense loop has to be measured on
each core (docs/sparsity.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from microfit.reference import sparse

__all__ = ["FORMATS", "SPARSE_MODES", "SparseChoice", "byte_crossover", "choose_fc_storage",
           "choose_layers", "emit_sparse", "layer_record"]

FORMATS = ("dense", "rows", "bitmap", "blocks")

# The C function each format is computed by (declared in mf_sparse_fc_s8.h
# for the sparse ones) and the arrays it takes, in argument order after input.
KERNELS = {
    "dense": ("mf_fully_connected_s8", ("weights",)),
    "rows": ("mf_sparse_fully_connected_s8", ("row_nnz", "deltas", "values")),
    "bitmap": ("mf_bitmap_fully_connected_s8", ("bitmap", "values")),
    "blocks": ("mf_block_fully_connected_s8", ("row_nblk", "deltas", "values")),
}


@dataclass(frozen=True)
class SparseChoice:
    """How one layer's weights are stored, and why.

    ``arrays`` maps each argument name of ``kernel`` (see ``KERNELS``) to the
    array to emit as ``static const ... MF_CONST`` (uint8 arrays as
    ``uint8_t``, int8 as ``int8_t``). ``candidates`` holds every format's
    bytes, so a report can print the whole comparison.
    """

    format: str
    arrays: dict[str, np.ndarray]
    bytes_dense: int
    bytes_sparse: int
    reason: str
    candidates: dict[str, int] = field(default_factory=dict)

    @property
    def kernel(self) -> str:
        return KERNELS[self.format][0]

    @property
    def bytes_chosen(self) -> int:
        return self.candidates[self.format]


def choose_fc_storage(weights_int8: np.ndarray, *,
                      allowed: tuple[str, ...] = ("rows", "bitmap")) -> SparseChoice:
    """Pick dense, compressed rows, bitmap or 1x4 blocks for int8 weights [Cout, Cin] by bytes.

    ``bytes_sparse`` is the smallest sparse candidate's size (even when dense
    wins), so a caller sees how far from paying sparsity was. ``allowed``
    restricts the sparse formats (e.g. to those a target's runtime has);
    "blocks" needs Cin a multiple of 4 (for a convolution, its input channels:
    codegen offers it only then).
    """
    w = np.asarray(weights_int8)
    unknown = set(allowed) - set(FORMATS[1:])
    if unknown:
        raise ValueError(f"unknown sparse formats {sorted(unknown)}; use some of {FORMATS[1:]}")
    candidates = {"dense": sparse.dense_bytes(w)}
    if "rows" in allowed:
        candidates["rows"] = sparse.rows_bytes(w)
    if "bitmap" in allowed:
        candidates["bitmap"] = sparse.bitmap_bytes(w)
    if "blocks" in allowed:
        candidates["blocks"] = sparse.blocks_bytes(w)
    dense = candidates["dense"]
    sparse_only = {k: v for k, v in candidates.items() if k != "dense"}
    best_sparse = min(sparse_only, key=sparse_only.__getitem__) if sparse_only else None
    bytes_sparse = sparse_only[best_sparse] if best_sparse else dense
    density = np.count_nonzero(w) / w.size
    shown = ", ".join(f"{k} {v} B" for k, v in candidates.items())
    if best_sparse is None or bytes_sparse >= dense:
        return SparseChoice("dense", {"weights": w}, dense, bytes_sparse,
                            f"dense: no sparse format is smaller at {1 - density:.0%} sparsity "
                            f"({shown})", candidates)
    enc = {"rows": sparse.encode_rows, "bitmap": sparse.encode_bitmap,
           "blocks": sparse.encode_blocks}[best_sparse](w)
    arrays = {name: getattr(enc, name) for name in KERNELS[best_sparse][1]}
    if sum(a.size for a in arrays.values()) != bytes_sparse:
        raise AssertionError("sparse byte count disagrees with the encoded arrays")
    return SparseChoice(best_sparse, arrays, dense, bytes_sparse,
                        f"{best_sparse}: {bytes_sparse} B instead of {dense} B dense "
                        f"({1 - bytes_sparse / dense:.0%} fewer) at {1 - density:.0%} sparsity "
                        f"({shown})", candidates)


def byte_crossover(out_features: int, in_features: int, fmt: str, *, seed: int = 0,
                   step: float = 0.01) -> float | None:
    """The lowest sparsity (on a grid of ``step``) where ``fmt`` takes fewer bytes than dense.

    Measured on random unstructured masks with exactly round(sparsity * size)
    zeros, since escapes depend on where the zeros fall. None if never.
    """
    rng = np.random.default_rng(seed)
    size = out_features * in_features
    count = {"rows": sparse.rows_bytes, "bitmap": sparse.bitmap_bytes,
             "blocks": sparse.blocks_bytes}[fmt]
    for s in np.arange(0.0, 1.0 + step / 2, step):
        nz = size - round(float(s) * size)
        flat = np.zeros(size, dtype=np.int8)
        flat[rng.choice(size, nz, replace=False)] = 1
        if count(flat.reshape(out_features, in_features)) < size:
            return round(float(s), 6)
    return None


# ----------------------------------------------------------------------------
# Code generation: which layers go sparse, and the C they become.

SPARSE_MODES = ("auto", "rows", "blocks", "off")
"""``generate(..., sparse=)``: "auto" stores each eligible layer in the format
with the fewest bytes (dense where sparse does not pay); "rows" the same but
with compressed rows as the only sparse format (the faster of the portable
kernels on Cortex-M, where the bitmap kernel trails the dense one at any
sparsity); "blocks" with 1x4 blocks as the only one (layers whose input
channels are no multiple of 4 stay dense): on Cortex-M the block kernels are
the ones that beat the DSP dense path (docs/sparsity.md); "off" keeps every
layer dense."""

#: The C function of each CONV_2D in the rows format: a 1x1 kernel that keeps
#: the row walk flat, and a general KxK one that steps (ky, kx, ic) along it.
CONV_KERNELS = {"1x1": "mf_sparse_conv1x1_s8", "kxk": "mf_sparse_conv2d_s8",
                "blocks": "mf_block_conv2d_s8"}
_HEADERS = {"mf_sparse_fully_connected_s8": "mf_sparse_fc_s8.h",
            "mf_bitmap_fully_connected_s8": "mf_sparse_fc_s8.h",
            "mf_sparse_conv1x1_s8": "mf_sparse_conv1x1_s8.h",
            "mf_sparse_conv2d_s8": "mf_sparse_conv2d_s8.h",
            "mf_block_fully_connected_s8": "mf_sparse_block_s8.h",
            "mf_block_conv2d_s8": "mf_sparse_block_s8.h",
            "mf_block_conv2d_s8_fast": "mf_sparse_block_s8.h"}


def _layer_matrix(graph, node) -> tuple[np.ndarray, tuple[str, ...]] | None:
    """The int8 weight matrix [Cout, K] of a node codegen can store sparse, and its formats."""
    if node.op == "FULLY_CONNECTED":
        w = np.asarray(graph.tensors[node.inputs[1]].data, dtype=np.int8)
        return w, ("rows", "bitmap") + (("blocks",) if w.shape[1] % sparse.BLOCK == 0 else ())
    if node.op == "CONV_2D":
        w = np.asarray(graph.tensors[node.inputs[1]].data, dtype=np.int8)
        # OHWI rows flattened over (ky, kx, ic): the order the conv kernels walk. 1x4 blocks
        # lie within one tap when in_c is a multiple of 4.
        blocks = ("blocks",) if w.shape[-1] % sparse.BLOCK == 0 else ()
        return w.reshape(w.shape[0], -1), ("rows",) + blocks
    return None


def choose_layers(graph, mode: str = "auto") -> dict[int, SparseChoice]:
    """Each eligible node's storage choice by node index (empty when ``mode`` is "off").

    Eligible: FULLY_CONNECTED (rows or bitmap) and CONV_2D (rows; bitmap has
    no convolution kernel), both also as 1x4 blocks when their input channels
    are a multiple of 4. Depthwise layers stay dense: their rows are k_h*k_w
    long, too short for any index to pay.
    """
    if mode not in SPARSE_MODES:
        raise ValueError(f"unknown sparse mode {mode!r}; use one of {SPARSE_MODES}")
    if mode == "off":
        return {}
    choices = {}
    for idx, node in enumerate(graph.nodes):
        m = _layer_matrix(graph, node)
        if m is None:
            continue
        w, allowed = m
        if mode == "rows":
            allowed = ("rows",)
        elif mode == "blocks":
            if "blocks" not in allowed:
                continue
            allowed = ("blocks",)
        if w.shape[1] > sparse.MAX_IN_FEATURES:
            continue
        choices[idx] = choose_fc_storage(w, allowed=allowed)
    return choices


def conv_kernel(node_shape: tuple[int, ...]) -> str:
    """The rows-format C function of a CONV_2D with OHWI weights of this shape."""
    return CONV_KERNELS["1x1" if node_shape[1] == node_shape[2] == 1 else "kxk"]


def scratch_bytes(graph, node, choice: SparseChoice, kernels: str) -> int:
    """Scratch memory of a sparse layer's kernel (its C *_get_buffer_size), 0 for none.

    Only the Cortex-M block convolution has some: four int16 columns of K values
    (mf_block_conv2d_s8_fast_get_buffer_size).
    """
    if kernels == "fast" and node.op == "CONV_2D" and choice.format == "blocks":
        return 8 * int(np.prod(graph.tensors[node.inputs[1]].shape[1:]))
    return 0


def layer_kernel(graph, node, choice: SparseChoice, kernels: str = "portable") -> str | None:
    """The sparse C function a layer calls, None when it stays dense."""
    if choice.format == "dense":
        return None
    if node.op == "CONV_2D":
        if choice.format == "blocks":
            return CONV_KERNELS["blocks"] + ("_fast" if kernels == "fast" else "")
        return conv_kernel(graph.tensors[node.inputs[1]].shape)
    return choice.kernel


def layer_record(graph, node, choice: SparseChoice, kernels: str = "portable") -> dict:
    """One row of generate.json's ``sparse_layers``: what was stored, and why, in bytes."""
    return {"layer": node.name, "op": node.op, "format": choice.format,
            "kernel": layer_kernel(graph, node, choice, kernels),
            "bytes_dense": choice.bytes_dense, "bytes_chosen": choice.bytes_chosen,
            "candidates": dict(choice.candidates), "reason": choice.reason}


def emit_sparse(em, idx: int, node, p) -> str | None:
    """The C of a layer stored sparse, or None when it stays dense (the dense emitter runs).

    Called first by kernels.emit_fc / emit_conv. The rows and bitmap kernels
    are the portable ones on every kernel set: they take the plain bias and
    the input offset in their params struct. The blocks kernels take the fast
    path's folded bias and packed requantization on every kernel set, and the
    "fast" set's convolution its Cortex-M form with scratch memory. Every one
    gives the same bytes as every dense kernel.
    """
    from . import layouts
    from .kernels import _call, _check_u16, _conv_geometry

    choice = getattr(em, "sparse_choices", {}).get(idx)
    if choice is None or choice.format == "dense":
        return None
    g = em.g
    w = g.tensors[node.inputs[1]]
    b = g.tensors[node.inputs[2]]
    names = []
    for arg, arr in choice.arrays.items():
        ctype = "int8_t" if arr.dtype == np.int8 else "uint8_t"
        names.append(em.array(ctype, f"{w.name}_{arg}", arr))
    kernel = layer_kernel(g, node, choice, em.kernels)
    if choice.format == "blocks":
        # The fast path's constants: folded bias, packed requantization (mf_sparse_block_s8.h).
        folded = layouts.fold_bias(b.data, w.data, p.input_offset)
        small = layouts.accumulators_small(folded, w.data)
        bn = em.array("int32_t", f"{b.name}_folded", folded)
        rn = em.array("int32_t", f"{node.name}_requant",
                      layouts.pack_requant(p.multiplier, p.shift, p.output_offset, small,
                                           weights=w.data, bias=folded, mode=em.mode))
        consts = f"{bn}, {rn}"
        if kernel.endswith("_fast"):
            consts += f", {em.scratch(idx)}"
    else:
        bn = em.array("int32_t", b.name, b.data.astype(np.int32))
        mn = em.array("int32_t", f"{node.name}_multiplier", p.multiplier)
        sn = em.array("int32_t", f"{node.name}_shift", p.shift)
        consts = f"{bn}, {mn}, {sn}"
    if node.op == "FULLY_CONNECTED":
        ptype = "mf_fully_connected_params"
        fields = dict(in_features=w.shape[1], out_features=w.shape[0])
    else:
        ptype = "mf_conv2d_params"
        fields = _conv_geometry(g, node)
        _check_u16(node, **fields)
    fields.update(input_offset=p.input_offset, output_offset=p.output_offset,
                  act_min=p.act_min, act_max=p.act_max)
    em.includes.add(_HEADERS[kernel])
    return _call(ptype, fields,
                f"{kernel}(&p, {em.ptr(node.inputs[0])}, {', '.join(names)}, {consts}, "
                f"{em.ptr(node.outputs[0])});")
