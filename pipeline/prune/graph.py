"""Which layers are coupled: trace the model and group layers by channel set.

A *channel group* is one set of channels: made by a producer (Conv2d or
Linear, whose name is the group's name and the plan's key), carried through
channelwise layers (BatchNorm) and read by the next producer, possibly after
a Flatten that turns each channel into ``H*W`` consecutive features. Cutting
a channel means cutting it in every member, which is what apply.py does.

For now only plain chains are understood: every tensor has one consumer and
every op one tensor input. Anything else (residual adds, concatenation,
branches, grouped convolution, layers we have no rule for between two
producers) raises UnsupportedOpError naming the module and op; the
dependency-graph engine that replaces this module handles those. Unknown
single-input ops before the first producer or after the last one (input
scaling, a final softmax) are allowed, since they touch no pruned channel.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedOpError
from .functions import LayerRule, registered_types, rule_for


@dataclass
class ChannelGroup:
    """One set of channels and every layer that must be cut with it.

    ``consumers`` holds ``(layer name, features per channel)``: 1 when the
    next producer reads the channels directly, ``H*W`` after a Flatten.
    ``prunable`` is False when the channels are the model's output (a
    classifier's classes cannot be dropped); ``reason`` says why.
    """

    name: str
    channels: int
    channelwise: list[str] = field(default_factory=list)
    consumers: list[tuple[str, int]] = field(default_factory=list)
    prunable: bool = True
    reason: str = ""


@dataclass
class DependencyGraph:
    """The model's layers in execution order and its channel groups."""

    model_name: str
    layers: list[str]
    groups: dict[str, ChannelGroup]

    def prunable(self) -> list[ChannelGroup]:
        return [g for g in self.groups.values() if g.prunable]

    def input_group(self, layer: str) -> ChannelGroup | None:
        """The group whose channels ``layer`` reads (None: the model input)."""
        for group in self.groups.values():
            if any(name == layer for name, _ in group.consumers):
                return group
        return None


# Functional forms of the passthrough / flatten layers, as torch.fx records them.
_PASSTHROUGH_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
    F.dropout, F.dropout2d,
}
_PASSTHROUGH_METHODS = {"relu", "relu_", "contiguous"}
_META_METHODS = {"size", "dim", "numel"}
_META_ATTRS = {"shape", "ndim", "dtype", "device"}


class _LeafTracer(torch.fx.Tracer):
    """Stops at every layer type the pruner has a rule for, user subclasses included."""

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


def _is_meta(node: torch.fx.Node) -> bool:
    """True for nodes that compute shapes or sizes rather than tensors."""
    if node.op == "call_method" and node.target in _META_METHODS:
        return True
    if node.op == "call_function" and node.target is getattr and node.args[1] in _META_ATTRS:
        return True
    inputs = node.all_input_nodes
    return node.op in ("call_function", "call_method") and bool(inputs) and all(
        _is_meta(n) for n in inputs
    )


def _tensor_inputs(node: torch.fx.Node) -> list[torch.fx.Node]:
    return [n for n in node.all_input_nodes if not _is_meta(n)]


def _label(node: torch.fx.Node) -> str:
    return str(node.target) if node.op == "call_module" else node.name


def _op_name(node: torch.fx.Node, gm: torch.fx.GraphModule) -> str:
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target))).__name__
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    return str(node.target)


def _where(node: torch.fx.Node, gm: torch.fx.GraphModule) -> str:
    """'module 'block' (Block)' for the innermost module an op ran in."""
    if node.op == "call_module":
        return f"module '{node.target}' ({_op_name(node, gm)})"
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = list(stack.values())[-1]
        cls_name = getattr(cls, "__name__", str(cls))
        return f"module '{path}' ({cls_name})"
    return f"the forward() of {gm.__class__.__name__}"


def _is_batch_size(node: object, source: torch.fx.Node) -> bool:
    """Matches ``source.size(0)`` and ``source.shape[0]`` (the flatten idiom's first arg)."""
    if not isinstance(node, torch.fx.Node):
        return False
    if node.op == "call_method" and node.target == "size":
        return node.args[0] is source and tuple(node.args[1:]) == (0,)
    if node.op == "call_function" and node.target is operator.getitem and node.args[1] == 0:
        base = node.args[0]
        return isinstance(base, torch.fx.Node) and (
            (base.op == "call_function" and base.target is getattr
             and base.args == (source, "shape"))
            or (base.op == "call_method" and base.target == "size" and base.args == (source,))
        )
    return False


def _flatten_args_ok(node: torch.fx.Node) -> bool:
    """torch.flatten(x, 1) / x.flatten(1) / x.view(x.size(0), -1) and friends."""
    if node.target in ("view", "reshape"):
        args = node.args[1:]
        if len(args) == 1 and isinstance(args[0], (tuple, list)):
            args = tuple(args[0])
        return len(args) == 2 and _is_batch_size(args[0], node.args[0]) and args[1] == -1
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return start == 1 and end == -1


def _classify(node: torch.fx.Node, gm: torch.fx.GraphModule) -> tuple[str, LayerRule | None, str]:
    """``(role, rule, why)`` of a chain node; role "unknown" carries the reason in ``why``.

    A known layer type in a configuration its rule rejects (grouped conv,
    partial Flatten) raises at once: it would join a channel group.
    """
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        rule = rule_for(module)
        if rule is None:
            return "unknown", None, (
                f"layer '{node.target}' is a {type(module).__name__}, which structured pruning "
                "does not support yet (supported: Conv2d, Linear, BatchNorm, ReLU, ReLU6, "
                "pooling, Dropout, Flatten)"
            )
        if rule.check is not None:
            rule.check(module, str(node.target))
        return rule.role, rule, ""
    if node.op == "call_function" and node.target in _PASSTHROUGH_FUNCTIONS:
        return "passthrough", None, ""
    if node.op == "call_method" and node.target in _PASSTHROUGH_METHODS:
        return "passthrough", None, ""
    is_flatten = (
        (node.op == "call_function" and node.target is torch.flatten)
        or (node.op == "call_method" and node.target in ("flatten", "view", "reshape"))
    )
    if is_flatten:
        if not _flatten_args_ok(node):
            return "unknown", None, (
                f"{_op_name(node, gm)} at '{node.name}' in {_where(node, gm)} is not a plain "
                "flatten of all but the batch dimension; use nn.Flatten() or torch.flatten(x, 1)"
            )
        return "flatten", None, ""
    return "unknown", None, (
        f"op '{_op_name(node, gm)}' at '{node.name}' in {_where(node, gm)} is not supported by "
        "structured pruning yet"
    )


def _is_producer(node: torch.fx.Node, gm: torch.fx.GraphModule) -> bool:
    if node.op != "call_module":
        return False
    rule = rule_for(gm.get_submodule(str(node.target)))
    return rule is not None and rule.role == "producer"


def _check_chain(gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
    """The nodes from input to output, after rejecting merges, branches and reuse."""
    nodes = list(gm.graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise UnsupportedOpError(
            f"model {gm.__class__.__name__} takes {len(inputs)} inputs; pruning supports one"
        )
    for node in nodes:
        if _is_meta(node) or node.op == "placeholder":
            continue
        tensor_inputs = _tensor_inputs(node)
        params = [n for n in tensor_inputs if n.op == "get_attr"]
        if params:
            raise UnsupportedOpError(
                f"op '{_op_name(node, gm)}' at '{node.name}' in {_where(node, gm)} uses the "
                f"tensor '{params[0].target}' directly; write it as an nn.Module layer "
                "(e.g. nn.Conv2d) so it can be pruned"
            )
        if node.op == "output" and len(tensor_inputs) > 1:
            raise UnsupportedOpError(
                f"model {gm.__class__.__name__} returns {len(tensor_inputs)} tensors; "
                "pruning supports a single output"
            )
        if len(tensor_inputs) > 1:
            names = ", ".join(f"'{_label(n)}'" for n in tensor_inputs)
            kind = "residual add" if node.target in (operator.add, torch.add, "add") else "merge"
            raise UnsupportedOpError(
                f"{kind} '{_op_name(node, gm)}' at '{node.name}' in {_where(node, gm)} combines "
                f"{names}; structured pruning supports plain chains of layers only for now "
                "(residual connections and concatenation are not supported yet)"
            )
    called = [str(n.target) for n in nodes if n.op == "call_module"]
    for name in called:
        if called.count(name) > 1:
            raise UnsupportedOpError(
                f"layer '{name}' is called {called.count(name)} times in forward(); pruning "
                "needs each layer used once"
            )
    chain: list[torch.fx.Node] = []
    node = inputs[0]
    while node.op != "output":
        users = [u for u in node.users if not _is_meta(u)]
        if len(users) != 1:
            what = "is never used" if not users else "feeds " + ", ".join(
                f"'{_label(u)}'" for u in users)
            raise UnsupportedOpError(
                f"the output of '{_label(node)}' in {_where(node, gm)} {what}; "
                "pruning supports plain chains of layers only for now"
            )
        node = users[0]
        chain.append(node)
    return chain


def analyze(model: nn.Module) -> DependencyGraph:
    """Trace ``model`` and return its channel groups (see module docstring)."""
    gm = trace(model)
    chain = _check_chain(gm)
    groups: dict[str, ChannelGroup] = {}
    layers: list[str] = []
    current: ChannelGroup | None = None
    flattened = False  # a flatten happened since ``current`` was produced
    flat: bool | None = None  # layout of the current tensor; None: the model input
    producers = [i for i, n in enumerate(chain) if _is_producer(n, gm)]
    last_producer = producers[-1] if producers else -1
    for pos, node in enumerate(chain):
        if node.op == "output":
            if current is not None:
                current.prunable = False
                current.reason = "its channels are the model's output"
            break
        role, rule, why = _classify(node, gm)
        if role == "unknown":
            # Before the first producer an op only sees the model input, after
            # the last one only the output channels: neither is ever pruned, so
            # any single-input op there (input scaling, softmax) is harmless.
            if current is None:
                flat = None
                continue
            if pos > last_producer:
                continue
            raise UnsupportedOpError(why)
        name = str(node.target)
        if role == "flatten":
            flattened = flattened or flat is not True
            flat = True
            continue
        if role == "passthrough":
            continue
        assert rule is not None and rule.out_channels is not None
        module = gm.get_submodule(name)
        layers.append(name)
        if role == "channelwise":
            if current is not None:
                if flattened or rule.out_channels(module) != current.channels:
                    raise UnsupportedOpError(
                        f"layer '{name}' ({type(module).__name__}, {rule.out_channels(module)} "
                        f"features) does not act per channel on the {current.channels} channels "
                        f"of '{current.name}'"
                    )
                current.channelwise.append(name)
            continue
        # producer
        if rule.flat_input is not None and flat is not None and rule.flat_input != flat:
            layout = "[N, features]" if flat else "[N, C, H, W]"
            raise UnsupportedOpError(
                f"layer '{name}' ({type(module).__name__}) reads a {layout} tensor; pruning "
                "supports Conv2d on feature maps and Linear after a Flatten"
            )
        if current is not None:
            assert rule.in_features is not None
            features = rule.in_features(module)
            per_channel, rest = divmod(features, current.channels)
            if rest or (per_channel != 1 and not flattened) or per_channel == 0:
                raise UnsupportedOpError(
                    f"layer '{name}' reads {features} features but '{current.name}' makes "
                    f"{current.channels} channels; cannot map one onto the other"
                )
            current.consumers.append((name, per_channel))
        current = ChannelGroup(name=name, channels=rule.out_channels(module))
        groups[name] = current
        flattened = False
        flat = rule.flat_input
    return DependencyGraph(model_name=type(model).__name__, layers=layers, groups=groups)
