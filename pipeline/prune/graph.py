"""Which channels are coupled: trace the model and find its channel groups.

The model is traced with torch.fx (registered layer types stay leaves) and
run once on an example input to learn every tensor's shape. Walking the
traced graph, each tensor's channel axis (dim 1) gets one *channel id* per
element; the per-op rules of functions.py say how ids flow: a Conv2d makes
new ones, a ReLU passes them on, a flatten repeats each one ``H*W`` times,
``torch.cat`` concatenates them, a residual add declares its two inputs' ids
the same channels (union-find). After the walk, every union-find class is
one removable channel, and the classes made by producers (Conv2d, Linear)
that share any class form one *channel group*: the unit a plan prunes.

A group is named after its first producer (in execution order), and its
channels are numbered by first appearance in its producers' outputs, so for
a plain chain group ``"features.0"`` channel ``i`` is simply output channel
``i`` of layer ``features.0``.

Some channels can never go (*pinned*): the model's input and output
channels, channels read by a softmax across channels, channels broadcast
against others. An op without a rule is accepted only where it cannot see
prunable channels (before the first layer, or on the way from the last layer
to the output); anywhere else it is an UnsupportedOpError naming the module
and the op, never a silent skip.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import UnsupportedOpError
from .functions import LayerRule, function_rule, registered_types, rule_for

# Ops that compute shapes, not tensors.
_META_METHODS = {"size", "dim", "numel"}
_META_ATTRS = {"shape", "ndim", "dtype", "device"}
# Shape propagation runs a batch of this many so a batch dim never looks like 1.
_TRACE_BATCH = 2


class _Unsupported(Exception):
    """Raised by a rule through ``ctx.fail``; graph.py decides if it is fatal."""


@dataclass
class ChannelGroup:
    """One set of coupled channels and every layer that must be cut with them.

    ``producers`` make the channels (their output channels are cut);
    ``channelwise`` act per channel on them (BatchNorm, depthwise conv);
    ``consumers`` read them as ``(layer, inputs per channel)`` (1 for a conv,
    ``H*W`` for a Linear after a flatten). ``pinned`` lists channels that must
    stay (``pin_reasons`` says why); a group whose channels are all pinned is
    not prunable and ``reason`` says why.
    """

    name: str
    channels: int
    producers: list[str] = field(default_factory=list)
    channelwise: list[str] = field(default_factory=list)
    consumers: list[tuple[str, int]] = field(default_factory=list)
    pinned: list[int] = field(default_factory=list)
    pin_reasons: list[str] = field(default_factory=list)

    @property
    def prunable(self) -> bool:
        return len(self.pinned) < self.channels

    @property
    def reason(self) -> str:
        return "; ".join(self.pin_reasons) if not self.prunable else ""

    @property
    def members(self) -> list[str]:
        """Every layer cut with this group."""
        names = [*self.producers, *self.channelwise, *(c for c, _ in self.consumers)]
        return list(dict.fromkeys(names))


@dataclass
class LayerEntry:
    """A traced layer: its type, rule, and the group channel of each element of its axes.

    ``axes[axis]`` holds one flat index per element into the graph's class
    table (``DependencyGraph.keep_vector``); index ``-1`` marks an element
    that is never pruned.
    """

    name: str
    type_name: str
    rule: LayerRule
    axes: dict[str, np.ndarray]
    producer: bool = False


@dataclass
class DependencyGraph:
    """The model's layers, its channel groups, and what applying a plan must rewrite."""

    model_name: str
    input_shape: tuple[int, ...]
    layers: dict[str, LayerEntry]
    groups: dict[str, ChannelGroup]
    offsets: dict[str, int]
    traced: torch.fx.GraphModule = field(repr=False)
    id_to_flat: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    rewrites: list[tuple[str, Callable[..., None]]] = field(default_factory=list, repr=False)

    def prunable(self) -> list[ChannelGroup]:
        return [g for g in self.groups.values() if g.prunable]

    @property
    def total_classes(self) -> int:
        return sum(g.channels for g in self.groups.values())

    def group_of(self, layer: str) -> ChannelGroup | None:
        """The group ``layer`` produces, or else the first group it is cut with."""
        for g in self.groups.values():
            if layer in g.producers:
                return g
        for g in self.groups.values():
            if layer in g.members:
                return g
        return None

    def input_group(self, layer: str) -> ChannelGroup | None:
        """The group whose channels ``layer`` reads (None: none or several)."""
        for g in self.groups.values():
            if any(name == layer for name, _ in g.consumers):
                return g
        return None

    def keep_vector(self, keep: Mapping[str, Iterable[int]]) -> np.ndarray:
        """A bool per class (plus a final always-True slot) from ``{group: kept indices}``.

        Groups absent from ``keep`` keep every channel.
        """
        vec = np.ones(self.total_classes + 1, dtype=bool)
        for name, kept in keep.items():
            g = self.groups[name]
            off = self.offsets[name]
            vec[off:off + g.channels] = False
            idx = np.asarray(list(kept), dtype=np.int64)
            vec[off + idx] = True
        return vec

    def kept_elements(self, layer: str, axis: str, vec: np.ndarray) -> np.ndarray:
        return np.nonzero(vec[self.layers[layer].axes[axis]])[0]

    def describe(self) -> str:
        """A few lines per group: what a user needs to understand the coupling."""
        lines = [f"{self.model_name}: {len(self.groups)} channel groups"]
        for g in self.groups.values():
            state = "pinned: " + g.reason if not g.prunable else (
                f"{len(g.pinned)} pinned" if g.pinned else "prunable")
            lines.append(f"  {g.name}: {g.channels} channels, producers {g.producers}, "
                         f"channelwise {g.channelwise}, consumers {g.consumers} ({state})")
        return "\n".join(lines)


class _LeafTracer(torch.fx.Tracer):
    """Stops at every layer type that has a rule, user subclasses included."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, registered_types()) or super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module) -> torch.fx.GraphModule:
    """Symbolically trace ``model``; failure is an UnsupportedOpError naming the model."""
    tracer = _LeafTracer()
    try:
        graph = tracer.trace(model)
    except Exception as exc:
        raise UnsupportedOpError(
            f"cannot trace model {type(model).__name__} with torch.fx "
            f"({type(exc).__name__}: {exc}); structured pruning needs a forward() without "
            "data-dependent control flow"
        ) from exc
    return torch.fx.GraphModule(tracer.root, graph, type(model).__name__)


def _is_meta(node: Any) -> bool:
    """True for nodes that compute shapes or sizes rather than tensors."""
    if not isinstance(node, torch.fx.Node):
        return False
    if node.op == "call_method" and node.target in _META_METHODS:
        return True
    if node.op == "call_function" and node.target is getattr and node.args[1] in _META_ATTRS:
        return True
    inputs = node.all_input_nodes
    return node.op in ("call_function", "call_method") and bool(inputs) and all(
        _is_meta(n) for n in inputs)


def _op_name(node: torch.fx.Node, gm: torch.fx.GraphModule) -> str:
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target))).__name__
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    return str(node.target)


def _where(node: torch.fx.Node, gm: torch.fx.GraphModule) -> str:
    """"module 'block' (Block)" for the innermost module an op ran in."""
    if node.op == "call_module":
        return f"module '{node.target}' ({_op_name(node, gm)})"
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = list(stack.values())[-1]
        cls_name = getattr(cls, "__name__", str(cls)).rsplit(".", 1)[-1]
        return f"module '{path}' ({cls_name})"
    return f"the forward() of {gm.__class__.__name__}"


def describe_op(node: torch.fx.Node, gm: torch.fx.GraphModule) -> str:
    if node.op == "call_module":
        return f"layer '{node.target}' ({_op_name(node, gm)})"
    return f"op '{_op_name(node, gm)}' at '{node.name}' in {_where(node, gm)}"


class TraceContext:
    """What a rule may do while the graph is walked (see functions.py)."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        self.gm = gm
        self.parent: list[int] = []
        self.origin: list[set[str]] = []
        self.pins: dict[int, list[str]] = {}
        self.values: dict[torch.fx.Node, Any] = {}
        self.axes: dict[str, dict[str, np.ndarray]] = {}
        self.producers: list[str] = []
        self.rewrites: list[tuple[str, Callable[..., None]]] = []
        self.node: torch.fx.Node | None = None

    # -- union-find over channel ids --------------------------------------------------
    def _new(self, n: int, origin: str) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self.origin.extend({origin} for _ in range(n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Declare ``a[k]`` and ``b[k]`` the same channel for every k."""
        if len(a) != len(b):
            self.fail(f"combines {len(a)} channels with {len(b)}")
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[ry] = rx
                self.origin[rx] |= self.origin[ry]
                if ry in self.pins:
                    self.pins.setdefault(rx, []).extend(self.pins.pop(ry))

    def pin(self, ids: np.ndarray, reason: str) -> None:
        """These channels must stay (``reason`` is shown to the user)."""
        for i in np.unique(ids).tolist():
            r = self.find(i)
            reasons = self.pins.setdefault(r, [])
            if reason not in reasons:
                reasons.append(reason)

    # -- recording layers --------------------------------------------------------------
    def produce(self, name: str, n: int) -> np.ndarray:
        """Fresh channel ids for ``name``'s output axis (the same ones if called again)."""
        if name in self.axes and "out" in self.axes[name]:
            return self.axes[name]["out"]
        ids = self._new(n, "producer")
        self.axes.setdefault(name, {})["out"] = ids
        self.producers.append(name)
        return ids

    def axis(self, name: str, axis: str, ids: np.ndarray) -> None:
        """Record that ``name``'s parameter axis ``axis`` carries ``ids``."""
        known = self.axes.setdefault(name, {})
        if axis in known:
            self.union(known[axis], ids)  # a layer called twice cuts the same way both times
        else:
            known[axis] = ids

    def opaque(self, node: torch.fx.Node, reason: str) -> Any:
        """Fresh, pinned ids for the output of something the pruner does not see into."""
        meta = node.meta.get("tensor_meta")
        if meta is None:
            return None
        if not hasattr(meta, "shape") and isinstance(meta, (tuple, list)):
            return tuple(self._opaque_one(m, reason) for m in meta)
        return self._opaque_one(meta, reason)

    def _opaque_one(self, meta: Any, reason: str) -> np.ndarray | None:
        shape = getattr(meta, "shape", None)
        if shape is None or len(shape) < 2:
            return None
        ids = self._new(int(shape[1]), "opaque")
        self.pin(ids, reason)
        return ids

    def on_apply(self, node: torch.fx.Node, fn: Callable[..., None]) -> None:
        """Call ``fn(node_copy, count)`` when a plan is applied (split sizes, slice bounds)."""
        self.rewrites.append((node.name, fn))

    # -- reading values and shapes -----------------------------------------------------
    def fail(self, message: str) -> None:
        raise _Unsupported(message)

    def value(self, node: Any) -> Any:
        if not isinstance(node, torch.fx.Node):
            return None
        if node.op == "get_attr":
            self.fail(f"uses the tensor '{node.target}' directly; write it as an nn.Module "
                      "layer (e.g. nn.Conv2d) so it can be pruned")
        return self.values.get(node)

    def tensor_args(self, node: torch.fx.Node) -> list[tuple[torch.fx.Node, np.ndarray]]:
        out = []
        for arg in node.all_input_nodes:
            if _is_meta(arg):
                continue
            v = self.value(arg)
            if isinstance(v, np.ndarray):
                out.append((arg, v))
            elif v is not None:
                self.fail("takes a tuple of tensors")
        return out

    def tensor_inputs(self, node: torch.fx.Node, count: int | None = None) -> list[np.ndarray]:
        ids = [v for _, v in self.tensor_args(node)]
        if count is not None and len(ids) != count:
            self.fail(f"takes {len(ids)} feature maps; expected {count}")
        return ids

    def shape(self, node: Any) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta") if isinstance(node, torch.fx.Node) else None
        if meta is None or not hasattr(meta, "shape"):
            self.fail(f"'{getattr(node, 'name', node)}' has no known tensor shape")
        return tuple(int(d) for d in meta.shape)

    def rank(self, node: Any) -> int:
        return len(self.shape(node))

    def channels_of(self, node: Any) -> int:
        shape = self.shape(node)
        return shape[1] if len(shape) >= 2 else 1

    def norm_dim(self, node: Any, dim: int) -> int:
        rank = self.rank(node)
        return int(dim) % rank if rank else 0

    def reshape(self, node: torch.fx.Node) -> np.ndarray:
        """Channel ids after a view / reshape / flatten / squeeze, from the two shapes.

        Keeping dim 1 (spatial reshapes, squeezing a 1x1 map) keeps the ids;
        merging dim 1 with the dims after it (flatten) repeats each id over
        the merged size, channel-major, as torch lays out NCHW memory.
        Literal sizes in the call (``x.view(-1, 512)``) are rewritten when a
        plan is applied.
        """
        (x,) = self.tensor_inputs(node, 1)
        src = node.all_input_nodes[0]
        a, b = self.shape(src), self.shape(node)
        if len(a) < 2 or len(b) < 2 or a[0] != b[0]:
            self.fail(f"reshapes {list(a)} to {list(b)}, which moves the batch or channel axis")
        if b[1] == a[1] and int(np.prod(a[2:])) == int(np.prod(b[2:])):
            out = x
        else:
            merged, k = a[1], 2
            while merged < b[1] and k < len(a):
                merged *= a[k]
                k += 1
            if merged != b[1] or int(np.prod(a[k:])) != int(np.prod(b[2:])):
                self.fail(f"reshapes {list(a)} to {list(b)}; pruning supports flattening the "
                          "channel axis with the axes after it (torch.flatten(x, 1))")
            out = np.repeat(x, merged // a[1])
        if node.op == "call_method" and node.target in ("view", "reshape") or (
                node.op == "call_function" and node.target is torch.reshape):
            self._rewrite_literal_size(node, out)
        return out

    def _rewrite_literal_size(self, node: torch.fx.Node, out: np.ndarray) -> None:
        def sizes(n: torch.fx.Node) -> tuple[list[Any], Callable[[list[Any]], None]]:
            if n.op == "call_function":
                def put_f(v: list[Any]) -> None:
                    n.args = (n.args[0], tuple(v))
                return list(n.args[1]), put_f
            rest = n.args[1:]
            if len(rest) == 1 and isinstance(rest[0], (tuple, list)):
                def put_t(v: list[Any]) -> None:
                    n.args = (n.args[0], tuple(v))
                return list(rest[0]), put_t

            def put_m(v: list[Any]) -> None:
                n.args = (n.args[0], *v)
            return list(rest), put_m

        spec, _ = sizes(node)
        if len(spec) < 2 or not isinstance(spec[1], int) or spec[1] == -1:
            return

        def rewrite(n: torch.fx.Node, count: Callable[[np.ndarray], int]) -> None:
            spec, put = sizes(n)
            new = count(out)
            if spec[1] != new:
                spec[1] = new
                put(spec)

        self.on_apply(node, rewrite)


def _flat_nodes(arg: Any) -> list[torch.fx.Node]:
    out: list[torch.fx.Node] = []
    torch.fx.node.map_arg(arg, out.append)
    return out


def _run_shapes(gm: torch.fx.GraphModule, input_shape: Sequence[int]) -> None:
    shape = (_TRACE_BATCH, *(int(d) for d in input_shape[1:]))
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(shape))
    except Exception as exc:
        raise ValueError(
            f"running {gm.__class__.__name__} on a zero input of shape {shape} failed "
            f"({type(exc).__name__}: {exc}); input_shape is the full input shape including "
            "the batch dimension, e.g. (1, *splits.input_shape)"
        ) from exc


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=True))


def _param_free_to_output(gm: torch.fx.GraphModule) -> set[torch.fx.Node]:
    """Nodes from which the output is reached without passing a layer with weights."""
    reach: set[torch.fx.Node] = set()
    nodes = list(gm.graph.nodes)
    for node in reversed(nodes):
        if node.op == "output":
            reach.add(node)
            continue
        for user in node.users:
            if user not in reach:
                continue
            if user.op == "call_module" and _has_params(gm.get_submodule(str(user.target))):
                continue
            reach.add(node)
            break
    return reach


def analyze(model: nn.Module, input_shape: Sequence[int]) -> DependencyGraph:
    """Trace ``model`` and return its channel groups (see module docstring).

    ``input_shape`` is the model input's full shape with the batch dimension,
    e.g. ``(1, *splits.input_shape)``; the model runs once on zeros of that
    shape (in eval mode, on a copy) to learn the spatial sizes a flatten
    multiplies channels by.
    """
    net = copy.deepcopy(model).cpu().float()
    gm = trace(net)
    _run_shapes(gm, input_shape)
    ctx = TraceContext(gm)
    unknown: list[tuple[torch.fx.Node, list[np.ndarray], str]] = []
    layer_rules: dict[str, LayerRule] = {}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedOpError(
            f"model {type(model).__name__} takes {len(placeholders)} inputs; pruning supports one")

    for node in gm.graph.nodes:
        ctx.node = node
        if node.op == "placeholder":
            shape = ctx.shape(node)
            if len(shape) < 2:
                raise UnsupportedOpError("the model input needs a batch and a channel axis")
            ids = ctx._new(shape[1], "input")
            ctx.pin(ids, "they are the model's input channels")
            ctx.values[node] = ids
            continue
        if node.op == "get_attr" or _is_meta(node):
            continue
        if node.op == "output":
            for arg in _flat_nodes(node.args):
                v = ctx.values.get(arg)
                for ids in (v if isinstance(v, tuple) else (v,)):
                    if isinstance(ids, np.ndarray):
                        ctx.pin(ids, "they are the model's output")
            continue
        try:
            if node.op == "call_module":
                module = gm.get_submodule(str(node.target))
                rule = rule_for(module)
                if rule is None:
                    msg = (f"layer '{node.target}' is a {type(module).__name__}, which structured "
                           "pruning does not support yet; register a LayerRule for it "
                           "(microfit.prune.register_layer)")
                    if _has_params(module):
                        raise UnsupportedOpError(msg)
                    raise _Unsupported(msg)
                layer_rules[str(node.target)] = rule
                value = rule.trace(ctx, module, str(node.target), node)
            else:
                frule = function_rule(node)
                if frule is None:
                    raise _Unsupported("is not supported by structured pruning yet")
                value = frule.trace(ctx, node)
        except _Unsupported as exc:
            message = str(exc)
            if not message.startswith("layer '"):
                message = f"{describe_op(node, gm)} {message}"
            if node.op == "call_module" and _has_params(gm.get_submodule(str(node.target))):
                raise UnsupportedOpError(message) from None
            inputs = []
            for arg in node.all_input_nodes:
                v = ctx.values.get(arg)
                for ids in (v if isinstance(v, tuple) else (v,)):
                    if isinstance(ids, np.ndarray):
                        inputs.append(ids)
            unknown.append((node, inputs, message))
            value = ctx.opaque(node, f"made by {describe_op(node, gm)}, which pruning does "
                                     "not see into")
        ctx.values[node] = value

    # An op without a rule is harmless where it sees no prunable channel: on
    # the input side (only input channels) or on the way to the output.
    to_output = _param_free_to_output(gm)
    for node, inputs, message in unknown:
        made = [ids for ids in inputs
                if any("producer" in ctx.origin[ctx.find(i)] for i in ids.tolist())]
        if not made:
            continue
        if node in to_output:
            for ids in made:
                ctx.pin(ids, f"{describe_op(node, gm)} reads them on the way to the output")
            continue
        raise UnsupportedOpError(
            f"{message}; it sits between layers whose channels would be pruned")

    return _build(model, tuple(int(d) for d in input_shape), gm, ctx, layer_rules)


def _build(model: nn.Module, input_shape: tuple[int, ...], gm: torch.fx.GraphModule,
           ctx: TraceContext, rules: dict[str, LayerRule]) -> DependencyGraph:
    # Producers sharing any channel class belong to one group.
    owner: dict[int, str] = {}
    comp = {p: p for p in ctx.producers}

    def top(p: str) -> str:
        while comp[p] != p:
            p = comp[p]
        return p

    for p in ctx.producers:
        for i in ctx.axes[p]["out"].tolist():
            r = ctx.find(i)
            if r in owner:
                a, b = top(owner[r]), top(p)
                if a != b:
                    first, second = sorted((a, b), key=ctx.producers.index)
                    comp[second] = first
            else:
                owner[r] = p
    groups: dict[str, ChannelGroup] = {}
    local: dict[int, tuple[str, int]] = {}
    for p in ctx.producers:
        gname = top(p)
        g = groups.setdefault(gname, ChannelGroup(name=gname, channels=0))
        g.producers.append(p)
        for i in ctx.axes[p]["out"].tolist():
            r = ctx.find(i)
            if r not in local:
                local[r] = (gname, g.channels)
                if r in ctx.pins:
                    g.pinned.append(g.channels)
                    for why in ctx.pins[r]:
                        if why not in g.pin_reasons:
                            g.pin_reasons.append(why)
                g.channels += 1
    offsets: dict[str, int] = {}
    total = 0
    for name, g in groups.items():
        offsets[name] = total
        total += g.channels

    id_to_flat = np.full(len(ctx.parent), total, dtype=np.int64)  # slot ``total``: always kept
    for i in range(len(ctx.parent)):
        hit = local.get(ctx.find(i))
        if hit is not None:
            id_to_flat[i] = offsets[hit[0]] + hit[1]
    group_at = np.empty(total, dtype=object)
    for name, g in groups.items():
        group_at[offsets[name]:offsets[name] + g.channels] = name

    layers: dict[str, LayerEntry] = {}
    for name, axes in ctx.axes.items():
        flat = {axis: id_to_flat[ids] for axis, ids in axes.items()}
        producer = name in ctx.producers
        for axis, idx in flat.items():
            for gname in dict.fromkeys(group_at[i] for i in idx.tolist() if i < total):
                g = groups[gname]
                if producer and axis == "out":
                    continue
                if producer:  # its input side reads the group
                    mine = idx[(idx >= offsets[gname]) & (idx < offsets[gname] + g.channels)]
                    per = len(mine) // max(1, len(np.unique(mine)))
                    if name not in (c for c, _ in g.consumers):
                        g.consumers.append((name, per))
                elif name not in g.channelwise:
                    g.channelwise.append(name)
        module = gm.get_submodule(name)
        layers[name] = LayerEntry(name=name, type_name=type(module).__name__, rule=rules[name],
                                  axes=flat, producer=producer)
    graph = DependencyGraph(model_name=type(model).__name__, input_shape=input_shape,
                            layers=layers, groups=groups, offsets=offsets, traced=gm,
                            id_to_flat=id_to_flat)
    graph.rewrites.extend(ctx.rewrites)
    return graph


def rewrite_graph(graph: DependencyGraph, vec: np.ndarray) -> torch.fx.Graph | None:
    """A copy of the traced graph with channel-dependent constants updated, or None.

    Split sizes, channel slice bounds and literal view sizes are written in
    forward(); after pruning they must be the kept counts.
    """
    if not graph.rewrites:
        return None
    new_graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    for node in graph.traced.graph.nodes:
        env[node] = new_graph.node_copy(node, lambda n: env[n])
    by_name = {n.name: n for n in new_graph.nodes}
    def count(ids: np.ndarray) -> int:
        return int(vec[graph.id_to_flat[ids]].sum())

    before = str(new_graph)
    for node_name, fn in graph.rewrites:
        fn(by_name[node_name], count)
    if str(new_graph) == before:
        return None
    new_graph.lint()
    return new_graph


