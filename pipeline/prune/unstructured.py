"""Magnitude pruning that zeroes weights and keeps the shapes: unstructured,
block (1x4 / 4x1) and N:M.

The zeros pay on the device because code generation stores a layer's
weights compressed where that takes fewer bytes and runs kernels that skip
them (codegen/sparse.py, docs/sparsity.md). Masks are held through
fine-tuning (``apply_masks`` after every optimiser step) and survive int8
quantization: a float 0.0 quantizes to exactly int8 0 under per-channel
symmetric scales (tests/test_sparse_prune.py).

Patterns are laid out the way the kernels walk the weights: a conv weight
[Cout, Cin, kh, kw] is viewed as the generated code's OHWI rows
[Cout, kh, kw, Cin], so "along the input channels" means consecutive
entries of a row. A block of ``(bo, bi)`` covers ``bo`` output channels by
``bi`` consecutive input channels at one kernel tap and is kept or zeroed
whole, ranked by its mean absolute weight; N:M keeps the N largest of every
M consecutive input channels. A Linear after a Flatten of an (N, C, H, W)
feature map reads its input in the generated code's NHWC order, so given
the model's ``input_shape`` its columns are grouped in that order: torch's
column ``c*H*W + h*W + w`` is the row's ``(h*W + w)*C + c``, and a 1x4 block
is four consecutive channels at one (h, w) (``flattened_layouts``). Without
``input_shape`` a flattened Linear is grouped in torch's order, and its
blocks scatter over the generated rows.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

Masks = dict[str, torch.Tensor]
SCOPES = ("global", "layer")
PATTERNS = ("unstructured", "block", "n:m")
SPARSITY_SCHEDULES = ("one-shot", "iterative", "gradual", "imp-weight-rewind")


def _weights(model: nn.Module, skip: Iterable[str] = ()) -> dict[str, nn.Parameter]:
    """Conv and Linear weights (biases and BatchNorm stay dense: they are tiny)."""
    skipped = set(skip)
    return {name: m.weight for name, m in model.named_modules()
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and name not in skipped}


def magnitude_masks(model: nn.Module, sparsity: float, scope: str = "global",
                    skip: Iterable[str] = ()) -> Masks:
    """Masks (1 = keep) that zero ``sparsity`` of the weights by absolute value.

    ``scope`` "global" ranks all layers' weights together (layers with many
    redundant weights lose more); "layer" gives every layer the same
    sparsity. Ties keep the earlier weight, so masks are deterministic.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    weights = _weights(model, skip)
    masks: Masks = {}
    if scope == "layer":
        for name, w in weights.items():
            masks[name] = _mask_of(w.detach().abs().flatten(), sparsity).view_as(w)
        return masks
    flat = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    keep = _mask_of(flat, sparsity)
    start = 0
    for name, w in weights.items():
        masks[name] = keep[start:start + w.numel()].view_as(w).clone()
        start += w.numel()
    return masks


def _mask_of(values: torch.Tensor, sparsity: float) -> torch.Tensor:
    drop = int(sparsity * values.numel())
    mask = torch.ones_like(values)
    if drop:
        order = torch.argsort(values, stable=True)
        mask[order[:drop]] = 0.0
    return mask


def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Zero the masked weights in place (after every optimiser step when fine-tuning)."""
    with torch.no_grad():
        for name, mask in masks.items():
            model.get_submodule(name).weight.mul_(mask)


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero Conv/Linear weights."""
    weights = list(_weights(model).values())
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / total if total else 0.0


# ----------------------------------------------------------------------------
# block and N:M patterns

Layouts = Mapping[str, tuple[int, int]]
_FLATTENS = {"flatten", "view", "reshape"}


def _is_flatten(node) -> bool:
    if node.op == "call_module":
        return isinstance(node.graph.owning_module.get_submodule(str(node.target)), nn.Flatten)
    if node.op == "call_function":
        return node.target in (torch.flatten, torch.reshape)
    return node.op == "call_method" and node.target in _FLATTENS


def flattened_layouts(model: nn.Module, input_shape: Sequence[int]) -> dict[str, tuple[int, int]]:
    """``{linear name: (C, H*W)}`` for every Linear whose input is a 4-D (N, C, H, W)
    feature map flattened (through elementwise ops such as Dropout or ReLU after the
    flatten); the generated code reads those columns in NHWC order.

    ``input_shape`` is the model input's full shape with the batch dimension. The
    model is traced with torch.fx on a copy (as the pruning graph is); a model
    torch.fx cannot trace gets a warning and no layouts (torch's column order).
    """
    from .graph import _run_shapes, trace

    try:
        gm = trace(copy.deepcopy(model).cpu().float())
    except Exception as exc:  # noqa: BLE001 - any tracing failure falls back to torch order
        warnings.warn(f"block/N:M masks group flattened Linear columns in torch's NCHW order: "
                      f"{exc}", stacklevel=2)
        return {}
    _run_shapes(gm, input_shape)

    def shape(node) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta") if hasattr(node, "meta") else None
        return tuple(int(d) for d in meta.shape) if hasattr(meta, "shape") else None

    layouts: dict[str, tuple[int, int]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or not node.args:
            continue
        module = gm.get_submodule(str(node.target))
        if not isinstance(module, nn.Linear):
            continue
        src = node.args[0]
        flat = shape(src)
        # Walk back over elementwise ops (one tensor input of the same 2-D shape).
        while not _is_flatten(src):
            ins = [n for n in src.all_input_nodes if shape(n) is not None]
            if flat is None or len(flat) != 2 or len(ins) != 1 or shape(ins[0]) != flat:
                break
            src = ins[0]
        if not _is_flatten(src) or not src.all_input_nodes:
            continue
        fmap = shape(src.all_input_nodes[0])
        if (flat is not None and len(flat) == 2 and fmap is not None and len(fmap) == 4
                and fmap[1] * fmap[2] * fmap[3] == module.in_features == flat[1]):
            layouts[str(node.target)] = (fmap[1], fmap[2] * fmap[3])
    return layouts


def _layouts(model: nn.Module, input_shape: Sequence[int] | None,
             layouts: Layouts | None) -> Layouts:
    if layouts is not None:
        return layouts
    return flattened_layouts(model, input_shape) if input_shape is not None else {}


def _to_generated(w: torch.Tensor, layout: tuple[int, int] | None) -> torch.Tensor:
    """A flattened Linear's [O, C*HW] weight with its columns in NHWC order [O, HW*C]."""
    if layout is None:
        return w
    c, hw = layout
    return w.reshape(w.shape[0], c, hw).transpose(1, 2).reshape(w.shape[0], hw * c)


def _from_generated(m: torch.Tensor, layout: tuple[int, int] | None) -> torch.Tensor:
    if layout is None:
        return m
    c, hw = layout
    return m.reshape(m.shape[0], hw, c).transpose(1, 2).reshape(m.shape[0], c * hw).contiguous()


def _rows_view(w: torch.Tensor) -> torch.Tensor:
    """[Cout, Cin, *k] -> [Cout, *k, Cin] (the generated code's OHWI rows); Linear unchanged."""
    return w.permute(0, *range(2, w.dim()), 1) if w.dim() > 2 else w


def _from_rows_view(m: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return m.permute(0, like.dim() - 1, *range(1, like.dim() - 1)) if like.dim() > 2 else m


def _block_scores(w: torch.Tensor, block: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean |w| of each (bo, bi) block, and how many real weights each block covers."""
    bo, bi = block
    r = _rows_view(w.detach().abs())
    cout, cin = r.shape[0], r.shape[-1]
    po, pi = -cout % bo, -cin % bi
    flat = r.reshape(cout, -1, cin)
    padded = torch.nn.functional.pad(flat, (0, pi, 0, 0, 0, po))
    ones = torch.nn.functional.pad(torch.ones_like(flat), (0, pi, 0, 0, 0, po))
    shape = ((cout + po) // bo, bo, flat.shape[1], (cin + pi) // bi, bi)
    total = padded.reshape(shape).sum(dim=(1, 4))
    count = ones.reshape(shape).sum(dim=(1, 4))
    return total / count, count


def _expand_block_mask(keep: torch.Tensor, w: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    bo, bi = block
    r = _rows_view(w)
    cout, cin = r.shape[0], r.shape[-1]
    m = keep.repeat_interleave(bo, 0).repeat_interleave(bi, 2)[:cout, :, :cin]
    return _from_rows_view(m.reshape(r.shape).to(w.dtype), w)


def block_masks(model: nn.Module, sparsity: float, block: tuple[int, int] = (1, 4),
                scope: str = "global", skip: Iterable[str] = (), *,
                input_shape: Sequence[int] | None = None,
                layouts: Layouts | None = None) -> Masks:
    """Masks that zero whole ``(out, in)`` blocks of weights, ``sparsity`` of the blocks.

    ``block=(1, 4)`` is four consecutive input channels of one output channel
    and tap (what a packed 4-byte load reads); ``(4, 1)`` four output channels
    at one input. Rows whose length is no multiple of the block end in a
    partial block, ranked by the mean of the weights it has. ``input_shape``
    (with the batch dimension) lets a Linear after a Flatten be grouped in the
    generated NHWC column order; ``layouts`` is ``flattened_layouts``' answer
    when the caller has it already.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if len(block) != 2 or min(block) < 1:
        raise ValueError(f"block must be (out, in) with both >= 1, got {block}")
    lay = _layouts(model, input_shape, layouts)
    weights = {name: _to_generated(w, lay.get(name)) for name, w in _weights(model, skip).items()}
    scores = {name: _block_scores(w, block)[0] for name, w in weights.items()}
    masks: Masks = {}
    if scope == "layer":
        keep = {name: _mask_of(s.flatten(), sparsity).view_as(s) for name, s in scores.items()}
    else:
        flat = _mask_of(torch.cat([s.flatten() for s in scores.values()]), sparsity)
        keep, start = {}, 0
        for name, s in scores.items():
            keep[name] = flat[start:start + s.numel()].view_as(s)
            start += s.numel()
    for name, w in weights.items():
        masks[name] = _from_generated(_expand_block_mask(keep[name], w, block), lay.get(name))
    return masks


def nm_masks(model: nn.Module, n: int = 2, m: int = 4, skip: Iterable[str] = (), *,
             input_shape: Sequence[int] | None = None,
             layouts: Layouts | None = None) -> Masks:
    """Masks keeping the ``n`` largest |w| of every ``m`` consecutive input channels.

    Sparsity is 1 - n/m (a row's last, partial group keeps at most ``n``).
    Ties keep the earlier weight. ``input_shape`` and ``layouts`` as in
    ``block_masks`` (groups in a flattened Linear's generated order).
    """
    if not 1 <= n <= m:
        raise ValueError(f"N:M needs 1 <= n <= m, got {n}:{m}")
    lay = _layouts(model, input_shape, layouts)
    masks: Masks = {}
    for name, full in _weights(model, skip).items():
        w = _to_generated(full, lay.get(name))
        r = _rows_view(w.detach().abs())
        cin = r.shape[-1]
        pad = -cin % m
        g = torch.nn.functional.pad(r.reshape(-1, cin), (0, pad), value=-1.0)
        g = g.reshape(g.shape[0], -1, m)
        # Stable descending order: negate, then argsort ascending with stable ties.
        order = torch.argsort(-g, dim=-1, stable=True)
        keep = torch.zeros_like(g)
        keep.scatter_(-1, order[..., :n], 1.0)
        keep = keep.reshape(g.shape[0], -1)[:, :cin].reshape(r.shape)
        masks[name] = _from_generated(_from_rows_view(keep.to(w.dtype), w), lay.get(name))
    return masks


def make_masks(model: nn.Module, sparsity: float, pattern: str = "unstructured", *,
               block: tuple[int, int] = (1, 4), nm: tuple[int, int] = (2, 4),
               scope: str = "global", skip: Iterable[str] = (),
               input_shape: Sequence[int] | None = None, layouts: Layouts | None = None) -> Masks:
    """Masks of one ``pattern`` (see PATTERNS); N:M ignores ``sparsity`` (it is 1 - n/m).
    ``input_shape`` / ``layouts``: see ``block_masks`` (unused by "unstructured")."""
    if pattern == "unstructured":
        return magnitude_masks(model, sparsity, scope, skip)
    if pattern == "block":
        return block_masks(model, sparsity, block, scope, skip, input_shape=input_shape,
                           layouts=layouts)
    if pattern == "n:m":
        return nm_masks(model, *nm, skip=skip, input_shape=input_shape, layouts=layouts)
    raise ValueError(f"unknown sparsity pattern {pattern!r}; use one of {PATTERNS}")


# ----------------------------------------------------------------------------
# schedules


def sparsity_steps(target: float, steps: int, schedule: str) -> list[float]:
    """Sparsity to reach after each step; the last is ``target``.

    The pruning engine's schedules (prune/schedule.py) on the zeroed fraction:
    "one-shot" one step; "iterative" and "imp-weight-rewind" remove the same
    fraction of the remaining weights each step (1 - (1-t)^(k/n));
    "gradual" Zhu & Gupta's cubic s_t = t (1 - (1 - k/n)^3).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if schedule not in SPARSITY_SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; use one of {SPARSITY_SCHEDULES}")
    if schedule == "one-shot":
        return [target]
    if schedule == "gradual":
        return [target * (1.0 - (1.0 - k / steps) ** 3) for k in range(1, steps + 1)]
    return [1.0 - (1.0 - target) ** (k / steps) for k in range(1, steps + 1)]


def sparsify(model: nn.Module, splits, sparsity: float, *, pattern: str = "unstructured",
             schedule: str = "one-shot", steps: int = 3, epochs_per_step: int = 1,
             lr: float | None = None, seed: int = 0, progress: bool = False,
             **mask_kw) -> Masks:
    """Zero weights of ``model`` in place by ``pattern``, following ``schedule``, fine-tuning
    ``epochs_per_step`` after each step with the masks re-applied after every optimiser step.

    Masks only grow: a weight zeroed at one step stays zero. "imp-weight-rewind"
    resets the surviving weights to those ``model`` started with before each
    retraining. Returns the final masks (``model`` holds them exactly). Block and N:M
    masks group a flattened Linear's columns in the generated NHWC order, learned
    from ``splits.input_shape``.
    """
    from ..train.fit import train
    from .api import DEFAULT_FINETUNE_LR

    lr = DEFAULT_FINETUNE_LR if lr is None else lr
    start = copy.deepcopy(model.state_dict()) if schedule == "imp-weight-rewind" else None
    plan = [sparsity] if pattern == "n:m" else sparsity_steps(sparsity, steps, schedule)
    if pattern in ("block", "n:m") and "layouts" not in mask_kw:
        mask_kw["layouts"] = flattened_layouts(
            model, mask_kw.pop("input_shape", None) or (1, *splits.input_shape))
    masks: Masks = {}
    for k, s in enumerate(plan):
        new = make_masks(model, s, pattern, **mask_kw)
        masks = {n: new[n] * masks[n] if n in masks else new[n] for n in new}
        if start is not None:
            model.load_state_dict(start)
        apply_masks(model, masks)
        if epochs_per_step > 0:
            train(model, splits, epochs=epochs_per_step, lr=lr, seed=seed + k, progress=progress,
                  description=f"sparse fine-tune {s:.0%}",
                  after_step=lambda mdl, held=masks: apply_masks(mdl, held))
    model.eval()
    return masks
