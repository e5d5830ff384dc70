"""Structured (filter/channel) pruning.

Kept in layers, so the dependency-graph engine can replace the graph without
touching the rest:
  graph.py       which layers are coupled (torch.fx trace -> channel groups)
  functions.py   how to cut each layer type (registry)
  importance.py  how to rank channels (registry of criteria)
  plan.py        which channels to keep (the plan and the budget search)
  apply.py       carry out a plan (physically, or as a mask)
  macs.py        what it costs
  api.py         prune() and the run-folder files
"""

from .api import (
    DEFAULT_FINETUNE_EPOCHS,
    DEFAULT_FINETUNE_LR,
    PruneResult,
    load_pruned,
    prune,
    save_pruned,
)
from .apply import apply_plan, mask_model
from .functions import LayerRule, register_layer
from .graph import ChannelGroup, DependencyGraph, analyze
from .importance import register_criterion
from .macs import count_macs_params, count_params, layer_macs
from .plan import (
    DEFAULT_TARGET_MAC_RATIO,
    Plan,
    keep_count,
    load_plan,
    make_plan,
    save_plan,
    validate_plan,
)

__all__ = [
    "DEFAULT_FINETUNE_EPOCHS",
    "DEFAULT_FINETUNE_LR",
    "DEFAULT_TARGET_MAC_RATIO",
    "ChannelGroup",
    "DependencyGraph",
    "LayerRule",
    "Plan",
    "PruneResult",
    "analyze",
    "apply_plan",
    "count_macs_params",
    "count_params",
    "keep_count",
    "layer_macs",
    "load_plan",
    "load_pruned",
    "make_plan",
    "mask_model",
    "prune",
    "register_criterion",
    "register_layer",
    "save_plan",
    "save_pruned",
    "validate_plan",
]
