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

__all__ = ["FORMATS", "SparseChoice", "choose_fc_storage", "byte_crossover"]

FORMATS = ("dense", "rows", "bitmap")

# The C function each format is computed by (declared in mf_sparse_fc_s8.h
# for the sparse ones) and the arrays it takes, in argument order after input.
KERNELS = {
    "dense": ("mf_fully_connected_s8", ("weights",)),
    "rows": ("mf_sparse_fully_connected_s8", ("row_nnz", "deltas", "values")),
    "bitmap": ("mf_bitmap_fully_connected_s8", ("bitmap", "values")),
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
    """Pick dense, compressed rows or bitmap for int8 weights [Cout, Cin] by bytes.

    ``bytes_sparse`` is the smallest sparse candidate's size (even when dense
    wins), so a caller sees how far from paying sparsity was. ``allowed``
    restricts the sparse formats (e.g. to those a target's runtime has).
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
    enc = sparse.encode_rows(w) if best_sparse == "rows" else sparse.encode_bitmap(w)
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
    count = {"rows": sparse.rows_bytes, "bitmap": sparse.bitmap_bytes}[fmt]
    for s in np.arange(0.0, 1.0 + step / 2, step):
        nz = size - round(float(s) * size)
        flat = np.zeros(size, dtype=np.int8)
        flat[rng.choice(size, nz, replace=False)] = 1
        if count(flat.reshape(out_features, in_features)) < size:
            return round(float(s), 6)
    return None
