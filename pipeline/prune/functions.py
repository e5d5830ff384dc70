"""How to cut one layer: per-layer-type pruning functions, looked up by type.

This is the mechanism half of pruning, kept apart from the policy (which
channels) in plan.py and from the graph (which layers are coupled) in
graph.py. A new layer type plugs in with ``register_layer`` instead of an edit
to the pruner.

Roles:
  producer     makes a new set of channels (Conv2d, Linear): its outputs can be
               pruned, and it consumes the previous set on its input side.
  channelwise  acts per channel without mixing them (BatchNorm): it is cut
               with the channels that flow through it.
  passthrough  leaves channels alone and maps 0 to 0 (ReLU, pooling, dropout),
               which is what makes a pruned channel equal a zeroed one.
  flatten      folds spatial positions into features, channel-major.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UnsupportedOpError

ROLES = ("producer", "channelwise", "passthrough", "flatten")

PruneFn = Callable[[nn.Module, torch.Tensor], nn.Module]
MaskFn = Callable[[nn.Module, torch.Tensor], None]
CheckFn = Callable[[nn.Module, str], None]


@dataclass(frozen=True)
class LayerRule:
    """What the pruner knows about one layer type.

    ``prune_out`` / ``prune_in`` return a new, smaller module keeping the given
    output channels / input features; ``mask_out`` zeroes the given output
    channels in place so that they are exactly 0 downstream; ``check`` raises
    UnsupportedOpError for configurations of the type that the rule cannot
    handle (e.g. grouped convolution). ``flat_input`` says whether a
    producer reads ``[N, features]`` (Linear) or a ``[N, C, H, W]`` map (Conv2d),
    so a Linear applied to a feature map without a Flatten is caught.
    """

    role: str
    flat_input: bool | None = None
    out_channels: Callable[[nn.Module], int] | None = None
    in_features: Callable[[nn.Module], int] | None = None
    prune_out: PruneFn | None = None
    prune_in: PruneFn | None = None
    mask_out: MaskFn | None = None
    check: CheckFn | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; expected one of {ROLES}")


_RULES: dict[type[nn.Module], LayerRule] = {}


def register_layer(cls: type[nn.Module], rule: LayerRule) -> None:
    """Teach the pruner a layer type (subclasses inherit the rule)."""
    _RULES[cls] = rule


def rule_for(module: nn.Module) -> LayerRule | None:
    """The rule for ``module``'s type or its nearest registered base class."""
    for cls in type(module).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    return None


def registered_types() -> tuple[type[nn.Module], ...]:
    return tuple(_RULES)


# -- slicing helpers -------------------------------------------------------------

def _sliced(module: nn.Module, index: torch.Tensor, names_dims: list[tuple[str, int]],
            attrs: dict[str, int]) -> nn.Module:
    """A copy of ``module`` whose named tensors keep ``index`` along their dim.

    Copying keeps the module's exact type (a user subclass stays a subclass)
    and all its other settings; only the sliced tensors and the size
    attributes change.
    """
    new = copy.deepcopy(module)
    for name, dim in names_dims:
        tensor = getattr(module, name, None)
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


def _zero(module: nn.Module, index: torch.Tensor, names: list[str]) -> None:
    with torch.no_grad():
        for name in names:
            tensor = getattr(module, name, None)
            if tensor is not None:
                tensor.index_fill_(0, index.to(tensor.device), 0.0)


# -- Conv2d ----------------------------------------------------------------------

def _conv_check(module: nn.Module, name: str) -> None:
    assert isinstance(module, nn.Conv2d)
    if module.groups != 1:
        kind = "depthwise" if module.groups == module.in_channels else "grouped"
        raise UnsupportedOpError(
            f"layer '{name}' is a {kind} Conv2d (groups={module.groups}); structured pruning "
            "supports groups=1 convolutions only for now"
        )


def _conv_out(module: nn.Module, index: torch.Tensor) -> nn.Module:
    return _sliced(module, index, [("weight", 0), ("bias", 0)], {"out_channels": len(index)})


def _conv_in(module: nn.Module, index: torch.Tensor) -> nn.Module:
    return _sliced(module, index, [("weight", 1)], {"in_channels": len(index)})


register_layer(nn.Conv2d, LayerRule(
    role="producer",
    flat_input=False,
    out_channels=lambda m: m.out_channels,
    in_features=lambda m: m.in_channels,
    prune_out=_conv_out,
    prune_in=_conv_in,
    mask_out=lambda m, idx: _zero(m, idx, ["weight", "bias"]),
    check=_conv_check,
))


# -- Linear ----------------------------------------------------------------------

def _linear_out(module: nn.Module, index: torch.Tensor) -> nn.Module:
    return _sliced(module, index, [("weight", 0), ("bias", 0)], {"out_features": len(index)})


def _linear_in(module: nn.Module, index: torch.Tensor) -> nn.Module:
    return _sliced(module, index, [("weight", 1)], {"in_features": len(index)})


register_layer(nn.Linear, LayerRule(
    role="producer",
    flat_input=True,
    out_channels=lambda m: m.out_features,
    in_features=lambda m: m.in_features,
    prune_out=_linear_out,
    prune_in=_linear_in,
    mask_out=lambda m, idx: _zero(m, idx, ["weight", "bias"]),
))


# -- BatchNorm -------------------------------------------------------------------

def _bn_out(module: nn.Module, index: torch.Tensor) -> nn.Module:
    return _sliced(
        module, index,
        [("weight", 0), ("bias", 0), ("running_mean", 0), ("running_var", 0)],
        {"num_features": len(index)},
    )


# gamma = beta = 0 makes an affine BN output exactly 0; the zero mean covers a
# BN without affine parameters, whose output is then (0 - 0) / sqrt(var + eps).
_bn_mask: MaskFn = lambda m, idx: _zero(m, idx, ["weight", "bias", "running_mean"])  # noqa: E731

for _bn in (nn.BatchNorm1d, nn.BatchNorm2d):
    register_layer(_bn, LayerRule(
        role="channelwise",
        out_channels=lambda m: m.num_features,
        prune_out=_bn_out,
        mask_out=_bn_mask,
    ))


# -- layers that leave channels alone and keep zeros zero ------------------------------

for _cls in (nn.ReLU, nn.ReLU6, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
             nn.Dropout, nn.Dropout2d, nn.Identity):
    register_layer(_cls, LayerRule(role="passthrough"))


def _flatten_check(module: nn.Module, name: str) -> None:
    assert isinstance(module, nn.Flatten)
    if module.start_dim != 1 or module.end_dim != -1:
        raise UnsupportedOpError(
            f"layer '{name}' is Flatten(start_dim={module.start_dim}, end_dim={module.end_dim}); "
            "only Flatten(1, -1) is supported"
        )


register_layer(nn.Flatten, LayerRule(role="flatten", check=_flatten_check))
