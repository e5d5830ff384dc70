"""How each op touches channels, and how to cut each layer type: the rule registry.

This is the mechanism half of pruning, kept apart from the policy (which
channels: importance.py, plan.py) and from the propagation engine (graph.py).
A new layer type is one ``register_layer`` call; a new functional op is one
``register_function`` call. The pruner itself never names a layer type.

A rule has up to three parts:

``trace(ctx, module, name, node) -> channel ids of the output``
    Runs once per call while graph.py walks the traced model. Channel ids
    are integer arrays with one entry per element of a tensor's channel
    axis (dim 1). A rule either passes its input's ids through (ReLU,
    pooling), makes fresh ones (``ctx.produce``: a Conv2d or Linear creates
    a new set of channels), derives them (depthwise conv: each input channel
    becomes ``multiplier`` outputs; flatten: each channel becomes ``H*W``
    features), or says two sets are the same channels (``ctx.union``: a
    residual add). It records which of its parameter axes carry which ids
    (``ctx.axis``), so apply.py knows what to slice.
``prune(module, kept) -> new module``
    ``kept`` maps each recorded axis to the element indices that stay.
``mask(module, removed) -> None``
    Zeroes, in place, every weight that touches a removed element, for the
    "masked original" that a pruned model must equal (DESIGN invariant 2).

``cost_axes`` and ``param_axes`` say which axes scale a layer's MACs and each
parameter's size, so a plan's cost is computed without rebuilding the model.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    import torch.fx

    from .graph import TraceContext

KINDS = ("producer", "channelwise", "passthrough", "reshape")

Ids = np.ndarray
TraceFn = Callable[["TraceContext", nn.Module, str, "torch.fx.Node"], Any]
PruneFn = Callable[[nn.Module, dict[str, torch.Tensor]], nn.Module]
MaskFn = Callable[[nn.Module, dict[str, torch.Tensor]], None]
FunctionTraceFn = Callable[["TraceContext", "torch.fx.Node"], Any]


@dataclass(frozen=True)
class LayerRule:
    """What the pruner knows about one layer type (see the module docstring).

    ``kind`` is descriptive (reports, error messages); the behaviour is all in
    ``trace``/``prune``/``mask``. ``cost_axes(module)`` names the axes whose
    kept fraction multiplies the layer's MACs; ``param_axes(module)`` maps a
    parameter name to the axes whose kept fractions multiply its size.
    """

    kind: str
    trace: TraceFn
    prune: PruneFn | None = None
    mask: MaskFn | None = None
    cost_axes: Callable[[nn.Module], tuple[str, ...]] | None = None
    param_axes: Callable[[nn.Module], dict[str, tuple[str, ...]]] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; expected one of {KINDS}")


@dataclass(frozen=True)
class FunctionRule:
    """How a call_function / call_method node maps channel ids (parameter-free ops)."""

    trace: FunctionTraceFn


_LAYERS: dict[type[nn.Module], LayerRule] = {}
_FUNCTIONS: dict[Any, FunctionRule] = {}
_METHODS: dict[str, FunctionRule] = {}


def register_layer(cls: type[nn.Module], rule: LayerRule) -> None:
    """Teach the pruner a layer type (subclasses inherit the rule)."""
    _LAYERS[cls] = rule


def register_function(target: Callable[..., Any] | str, rule: FunctionRule) -> None:
    """Teach the pruner a functional op (``torch.cat``) or a tensor method (``"view"``)."""
    if isinstance(target, str):
        _METHODS[target] = rule
    else:
        _FUNCTIONS[target] = rule


def rule_for(module: nn.Module) -> LayerRule | None:
    """The rule for ``module``'s type or its nearest registered base class."""
    for cls in type(module).__mro__:
        if cls in _LAYERS:
            return _LAYERS[cls]
    return None


def function_rule(node: torch.fx.Node) -> FunctionRule | None:
    if node.op == "call_method":
        return _METHODS.get(str(node.target))
    if node.op == "call_function":
        try:
            return _FUNCTIONS.get(node.target)
        except TypeError:  # unhashable target
            return None
    return None


def registered_types() -> tuple[type[nn.Module], ...]:
    return tuple(_LAYERS)


# -- slicing helpers -----------------------------------------------------------------

def _sliced(module: nn.Module, slices: list[tuple[str, int, torch.Tensor]],
            attrs: dict[str, Any]) -> nn.Module:
    """A copy of ``module`` whose named tensors keep the given indices along a dim.

    Copying keeps the module's exact type (a user subclass stays a subclass)
    and all its other settings; only the sliced tensors and the size
    attributes change.
    """
    new = copy.deepcopy(module)
    for name, dim, index in slices:
        tensor = getattr(new, name, None)
        if tensor is None:
            continue
        data = tensor.detach().index_select(dim, index.to(tensor.device)).clone()
        if isinstance(tensor, nn.Parameter):
            setattr(new, name, nn.Parameter(data, requires_grad=tensor.requires_grad))
        else:
            setattr(new, name, data)
    for attr, value in attrs.items():
        setattr(new, attr, value)
    return new


def _zero(module: nn.Module, name: str, dim: int, index: torch.Tensor) -> None:
    tensor = getattr(module, name, None)
    if tensor is not None and len(index):
        with torch.no_grad():
            tensor.index_fill_(dim, index.to(tensor.device), 0.0)


# -- convolution -----------------------------------------------------------------------

def _conv_kind(m: nn.Module) -> str:
    if m.groups == 1:
        return "dense"
    if m.groups == m.in_channels:
        return "depthwise"
    return "grouped"


def _conv_trace(ctx: TraceContext, m: nn.Module, name: str, node: torch.fx.Node) -> Ids:
    (x,) = ctx.tensor_inputs(node, 1)
    if len(x) != m.in_channels:
        ctx.fail(f"reads {len(x)} channels but has in_channels={m.in_channels}")
    kind = _conv_kind(m)
    if kind == "dense":
        ctx.axis(name, "in", x)
        return ctx.produce(name, m.out_channels)
    if kind == "depthwise":
        # Output channel c*M + k is filter k of input channel c: removing an
        # input channel removes its M outputs, so they share the input's ids.
        out = np.repeat(x, m.out_channels // m.groups)
        ctx.axis(name, "in", x)
        ctx.axis(name, "out", out)
        return out
    # Grouped: every group must keep as many inputs (and outputs) as the
    # others, so position k of each group is one channel for pruning.
    g = m.groups
    ig, og = m.in_channels // g, m.out_channels // g
    grid = x.reshape(g, ig)
    for row in grid[1:]:
        ctx.union(grid[0], row)
    ctx.axis(name, "in", x)
    out = ctx.produce(name, m.out_channels)
    ogrid = out.reshape(g, og)
    for row in ogrid[1:]:
        ctx.union(ogrid[0], row)
    return out


def _conv_prune(m: nn.Module, kept: dict[str, torch.Tensor]) -> nn.Module:
    out, inn = kept["out"], kept["in"]
    kind = _conv_kind(m)
    if kind == "dense":
        return _sliced(m, [("weight", 0, out), ("weight", 1, inn), ("bias", 0, out)],
                       {"out_channels": len(out), "in_channels": len(inn)})
    if kind == "depthwise":
        return _sliced(m, [("weight", 0, out), ("bias", 0, out)],
                       {"out_channels": len(out), "in_channels": len(inn), "groups": len(inn)})
    ig = m.in_channels // m.groups
    local = inn[inn < ig]
    return _sliced(m, [("weight", 0, out), ("weight", 1, local), ("bias", 0, out)],
                   {"out_channels": len(out), "in_channels": len(inn)})


def _conv_mask(m: nn.Module, removed: dict[str, torch.Tensor]) -> None:
    out, inn = removed["out"], removed["in"]
    _zero(m, "weight", 0, out)
    _zero(m, "bias", 0, out)
    kind = _conv_kind(m)
    if kind == "dense":
        _zero(m, "weight", 1, inn)
    elif kind == "grouped":
        _zero(m, "weight", 1, inn[inn < m.in_channels // m.groups])


def _conv_cost(m: nn.Module) -> tuple[str, ...]:
    # MACs = outputs x (in_channels / groups) x kernel; a depthwise conv's
    # in_channels / groups stays 1 however many channels go.
    return ("out",) if _conv_kind(m) == "depthwise" else ("out", "in")


def _conv_params(m: nn.Module) -> dict[str, tuple[str, ...]]:
    return {"weight": _conv_cost(m), "bias": ("out",)}


_CONV_RULE = LayerRule(kind="producer", trace=_conv_trace, prune=_conv_prune, mask=_conv_mask,
                       cost_axes=_conv_cost, param_axes=_conv_params)
for _cls in (nn.Conv1d, nn.Conv2d):
    register_layer(_cls, _CONV_RULE)


# -- Linear ------------------------------------------------------------------------------

def _linear_trace(ctx: TraceContext, m: nn.Module, name: str, node: torch.fx.Node) -> Ids:
    (x,) = ctx.tensor_inputs(node, 1)
    if ctx.rank(node.args[0]) != 2:
        ctx.fail(f"is applied to a rank-{ctx.rank(node.args[0])} tensor; pruning supports "
                 "Linear on [N, features] (flatten first)")
    if len(x) != m.in_features:
        ctx.fail(f"reads {len(x)} features but has in_features={m.in_features}")
    ctx.axis(name, "in", x)
    return ctx.produce(name, m.out_features)


def _linear_prune(m: nn.Module, kept: dict[str, torch.Tensor]) -> nn.Module:
    out, inn = kept["out"], kept["in"]
    return _sliced(m, [("weight", 0, out), ("weight", 1, inn), ("bias", 0, out)],
                   {"out_features": len(out), "in_features": len(inn)})


def _linear_mask(m: nn.Module, removed: dict[str, torch.Tensor]) -> None:
    _zero(m, "weight", 0, removed["out"])
    _zero(m, "bias", 0, removed["out"])
    _zero(m, "weight", 1, removed["in"])


register_layer(nn.Linear, LayerRule(
    kind="producer", trace=_linear_trace, prune=_linear_prune, mask=_linear_mask,
    cost_axes=lambda m: ("out", "in"),
    param_axes=lambda m: {"weight": ("out", "in"), "bias": ("out",)},
))


# -- BatchNorm and other per-channel layers -------------------------------------------------

def _channelwise_trace(size_attr: str) -> TraceFn:
    def trace(ctx: TraceContext, m: nn.Module, name: str, node: torch.fx.Node) -> Ids:
        (x,) = ctx.tensor_inputs(node, 1)
        size = getattr(m, size_attr)
        if len(x) != size:
            ctx.fail(f"has {size} per-channel parameters but its input has {len(x)} channels")
        ctx.axis(name, "out", x)
        return x
    return trace


def _bn_prune(m: nn.Module, kept: dict[str, torch.Tensor]) -> nn.Module:
    idx = kept["out"]
    return _sliced(m, [(p, 0, idx) for p in ("weight", "bias", "running_mean", "running_var")],
                   {"num_features": len(idx)})


def _bn_mask(m: nn.Module, removed: dict[str, torch.Tensor]) -> None:
    # gamma = beta = 0 makes an affine BN output exactly 0; the zero mean covers a
    # BN without affine parameters, whose output is then (0 - 0) / sqrt(var + eps).
    for p in ("weight", "bias", "running_mean"):
        _zero(m, p, 0, removed["out"])


for _bn in (nn.BatchNorm1d, nn.BatchNorm2d):
    register_layer(_bn, LayerRule(
        kind="channelwise", trace=_channelwise_trace("num_features"), prune=_bn_prune,
        mask=_bn_mask, param_axes=lambda m: {"weight": ("out",), "bias": ("out",)},
    ))


def _prelu_trace(ctx: TraceContext, m: nn.Module, name: str, node: torch.fx.Node) -> Ids:
    (x,) = ctx.tensor_inputs(node, 1)
    if m.num_parameters == 1:
        return x
    return _channelwise_trace("num_parameters")(ctx, m, name, node)


register_layer(nn.PReLU, LayerRule(
    kind="channelwise", trace=_prelu_trace,
    prune=lambda m, kept: m if m.num_parameters == 1 else _sliced(
        m, [("weight", 0, kept["out"])], {"num_parameters": len(kept["out"])}),
    mask=lambda m, removed: None,
    param_axes=lambda m: {} if m.num_parameters == 1 else {"weight": ("out",)},
))


# -- layers that leave channels where they are -----------------------------------------------

def _passthrough(ctx: TraceContext, m: nn.Module | None, name: str, node: torch.fx.Node) -> Ids:
    (x,) = ctx.tensor_inputs(node, 1)
    return x


_PASSTHROUGH_LAYERS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.SiLU,
    nn.GELU, nn.ELU, nn.Tanh, nn.Sigmoid, nn.Mish, nn.Softplus,
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.Upsample,
    nn.ZeroPad2d, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity,
)
for _cls in _PASSTHROUGH_LAYERS:
    register_layer(_cls, LayerRule(kind="passthrough", trace=_passthrough))


def _flatten_trace(ctx: TraceContext, m: nn.Module, name: str, node: torch.fx.Node) -> Ids:
    return ctx.reshape(node)


register_layer(nn.Flatten, LayerRule(kind="reshape", trace=_flatten_trace))
register_layer(nn.Unflatten, LayerRule(kind="reshape", trace=_flatten_trace))


def _softmax_trace(ctx: TraceContext, m: nn.Module, name: str, node: torch.fx.Node) -> Ids:
    (x,) = ctx.tensor_inputs(node, 1)
    dim = m.dim if m.dim is not None else 1
    if ctx.norm_dim(node.args[0], dim) == 1:
        ctx.pin(x, f"'{name}' ({type(m).__name__}) normalises across them")
    return x


for _cls in (nn.Softmax, nn.LogSoftmax):
    register_layer(_cls, LayerRule(kind="passthrough", trace=_softmax_trace))


# -- functional ops ----------------------------------------------------------------------------

def _fn_passthrough(ctx: TraceContext, node: torch.fx.Node) -> Ids:
    x = ctx.tensor_inputs(node)
    if len(x) != 1:
        ctx.fail(f"takes {len(x)} tensors; expected one")
    return x[0]


for _fn in (F.relu, torch.relu, F.relu6, F.leaky_relu, F.hardtanh, F.hardswish, F.hardsigmoid,
            F.silu, F.gelu, F.elu, F.mish, torch.tanh, torch.sigmoid, F.sigmoid, F.tanh,
            torch.clamp, torch.clip, torch.abs, torch.neg, F.max_pool1d, F.max_pool2d,
            F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
            F.adaptive_max_pool2d, F.interpolate, F.dropout, F.dropout1d, F.dropout2d,
            operator.neg, operator.pos):
    register_function(_fn, FunctionRule(_fn_passthrough))
for _name in ("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clip",
              "abs", "neg", "contiguous", "clone", "detach", "float", "to"):
    register_function(_name, FunctionRule(_fn_passthrough))


def _fn_elementwise(ctx: TraceContext, node: torch.fx.Node) -> Ids:
    """add / sub / mul / div of tensors (broadcasting) or of a tensor and a number.

    Two full-width channel axes are the same channels (a residual add, a
    squeeze-and-excitation product); an axis of size 1 broadcasts and is
    left whole.
    """
    args = ctx.tensor_args(node)
    out_c = ctx.channels_of(node)
    full = []
    for arg, ids in args:
        if ctx.rank(arg) != ctx.rank(node):
            ctx.fail(f"broadcasts a rank-{ctx.rank(arg)} tensor against rank {ctx.rank(node)}; "
                     "pruning needs both operands with a channel axis at dim 1")
        if len(ids) == out_c:
            full.append(ids)
        else:
            ctx.pin(ids, f"'{node.name}' broadcasts them across channels")
    if not full:
        ctx.fail("has no operand with the output's channels")
    for ids in full[1:]:
        ctx.union(full[0], ids)
    return full[0]


for _fn in (operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd,
            operator.imul, torch.add, torch.sub, torch.mul, torch.div, torch.maximum,
            torch.minimum):
    register_function(_fn, FunctionRule(_fn_elementwise))
for _name in ("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"):
    register_function(_name, FunctionRule(_fn_elementwise))


def _fn_cat(ctx: TraceContext, node: torch.fx.Node) -> Ids:
    tensors = node.args[0] if node.args else node.kwargs["tensors"]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    parts = [ctx.value(t) for t in tensors]
    if any(not isinstance(p, np.ndarray) for p in parts):
        ctx.fail("concatenates something other than feature maps")
    dim = ctx.norm_dim(node, dim)
    if dim == 0:
        ctx.fail("concatenates along the batch dimension")
    if dim == 1:
        # Offsets follow from the parts: the consumer's columns for part k
        # start after all of parts 0..k-1, pruned or not.
        return np.concatenate(parts)
    for p in parts[1:]:
        ctx.union(parts[0], p)
    return parts[0]


for _fn in (torch.cat, torch.concat, torch.concatenate):
    register_function(_fn, FunctionRule(_fn_cat))


def _split_dim(node: torch.fx.Node) -> Any:
    args = list(node.args[1:])
    return args[1] if len(args) > 1 else node.kwargs.get("dim", 0)


def _fn_split(ctx: TraceContext, node: torch.fx.Node) -> tuple[Ids, ...]:
    """split / chunk: the piece sizes are read from the traced shapes (they may be
    computed in forward()), and rewritten to the kept counts when a plan is applied."""
    (x,) = ctx.tensor_inputs(node, 1)
    src = node.args[0]
    dim = ctx.norm_dim(src, _split_dim(node))
    metas = node.meta.get("tensor_meta")
    if hasattr(metas, "shape") or not isinstance(metas, (tuple, list)):
        ctx.fail("has no traced output shapes")
    sizes = [int(m.shape[dim]) for m in metas]
    if dim == 0:
        ctx.fail("splits along the batch dimension")
    if dim != 1:
        return tuple(x for _ in sizes)
    bounds = np.cumsum([0, *sizes])
    parts = tuple(x[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True))

    def rewrite(n: torch.fx.Node, count: Callable[[Ids], int]) -> None:
        new = [count(p) for p in parts]
        if new == sizes:
            return
        n.op = "call_function"
        n.target = torch.split
        n.args = (n.args[0], new)
        n.kwargs = {"dim": 1}

    ctx.on_apply(node, rewrite)
    return parts


for _fn in (torch.split, torch.chunk):
    register_function(_fn, FunctionRule(_fn_split))
for _name in ("split", "chunk"):
    register_function(_name, FunctionRule(_fn_split))


def _fn_getitem(ctx: TraceContext, node: torch.fx.Node) -> Any:
    src, index = node.args
    value = ctx.value(src)
    if isinstance(value, tuple):
        return value[index]
    if not isinstance(value, np.ndarray):
        return None
    rank = ctx.rank(src)
    items = list(index) if isinstance(index, tuple) else [index]
    if any(i is None for i in items):
        ctx.fail("adds an axis by indexing")
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items = items[:at] + [slice(None)] * (rank - len(items) + 1) + items[at + 1:]
    items += [slice(None)] * (rank - len(items))
    if items[0] != slice(None):
        ctx.fail("indexes the batch dimension")
    sel = items[1]
    if sel == slice(None):
        return value
    if not isinstance(sel, slice) or sel.step not in (None, 1) or any(
            isinstance(v, torch.fx.Node) for v in (sel.start, sel.stop)):
        ctx.fail("picks channels with an index that is not a constant slice a:b")
    start, stop, _ = sel.indices(len(value))
    part = value[start:stop]

    def rewrite(n: torch.fx.Node, count: Callable[[Ids], int]) -> None:
        a, b = count(value[:start]), count(value[:stop])
        if (a, b) == (start, stop):
            return
        new_items = list(n.args[1]) if isinstance(n.args[1], tuple) else [n.args[1]]
        pos = 1
        if Ellipsis in new_items:  # x[..., a:b] on a rank-2 tensor
            pos = len(new_items) - 1
        new_items[pos] = slice(a, b)
        n.args = (n.args[0], tuple(new_items))

    ctx.on_apply(node, rewrite)
    return part


register_function(operator.getitem, FunctionRule(_fn_getitem))


def _fn_reshape(ctx: TraceContext, node: torch.fx.Node) -> Ids:
    return ctx.reshape(node)


for _fn in (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze):
    register_function(_fn, FunctionRule(_fn_reshape))
for _name in ("flatten", "view", "reshape", "squeeze", "unsqueeze"):
    register_function(_name, FunctionRule(_fn_reshape))


def _fn_reduce(ctx: TraceContext, node: torch.fx.Node) -> Ids | None:
    """mean / sum / amax over dims: spatial reductions keep channels (global pooling)."""
    (x,) = ctx.tensor_inputs(node, 1)
    src = node.args[0]
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if dims is None:
        ctx.pin(x, f"'{node.name}' reduces over all of them")
        return None
    dims = {ctx.norm_dim(src, d) for d in (dims if isinstance(dims, (tuple, list)) else [dims])}
    if 0 in dims:
        ctx.fail("reduces over the batch dimension")
    if 1 in dims:
        ctx.pin(x, f"'{node.name}' reduces across them")
        return ctx.opaque(node, f"made by the channel reduction '{node.name}'")
    return x


for _fn in (torch.mean, torch.sum, torch.amax):
    register_function(_fn, FunctionRule(_fn_reduce))
for _name in ("mean", "sum", "amax"):
    register_function(_name, FunctionRule(_fn_reduce))


def _fn_softmax(ctx: TraceContext, node: torch.fx.Node) -> Ids:
    (x,) = ctx.tensor_inputs(node, 1)
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if dim is None or ctx.norm_dim(node.args[0], dim) == 1:
        ctx.pin(x, f"'{node.name}' normalises across them")
    return x


for _fn in (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax):
    register_function(_fn, FunctionRule(_fn_softmax))
for _name in ("softmax", "log_softmax"):
    register_function(_name, FunctionRule(_fn_softmax))
