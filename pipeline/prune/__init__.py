"""Structured (filter/channel) pruning on a dependency graph.

Kept in layers, mechanism apart from policy:
  graph.py       which channels are coupled (torch.fx trace -> channel groups)
  functions.py   how each op moves channels and how to cut each layer type (registry)
  importance.py  how to rank channels (registry of criteria)
  plan.py        which channels to keep (plans, local and global searches)
  apply.py       carry out a plan (physically, or as a mask)
  macs.py        what it costs (counted, and predicted for any plan)
  api.py         prune() and the run-folder files
"""

from .api import (
    DEFAULT_FINETUNE_EPOCHS,
    DEFAULT_FINETUNE_LR,
    PruneResult,
    load_pruned,
    measure,
    prune,
    save_pruned,
)
from .apply import apply_plan, mask_model
from .functions import FunctionRule, LayerRule, register_function, register_layer
from .graph import ChannelGroup, DependencyGraph, analyze
from .importance import criteria, register_criterion, score_groups
from .macs import CostModel, count_macs_params, count_params, layer_macs
from .plan import (
    DEFAULT_TARGET_MAC_RATIO,
    Plan,
    compose_plans,
    keep_count,
    load_plan,
    make_plan,
    round_to_for_board,
    round_to_for_core,
    save_plan,
    validate_plan,
)

__all__ = [
    "DEFAULT_FINETUNE_EPOCHS",
    "DEFAULT_FINETUNE_LR",
    "DEFAULT_TARGET_MAC_RATIO",
    "ChannelGroup",
    "CostModel",
    "DependencyGraph",
    "FunctionRule",
    "LayerRule",
    "Plan",
    "PruneResult",
    "analyze",
    "apply_plan",
    "compose_plans",
    "count_macs_params",
    "count_params",
    "criteria",
    "keep_count",
    "layer_macs",
    "load_plan",
    "load_pruned",
    "make_plan",
    "mask_model",
    "measure",
    "prune",
    "register_criterion",
    "register_function",
    "register_layer",
    "round_to_for_board",
    "round_to_for_core",
    "save_plan",
    "save_pruned",
    "score_groups",
    "validate_plan",
]
