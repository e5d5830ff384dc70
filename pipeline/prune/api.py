"""The prune stage's entry point: plan, cut, fine-tune, and the run-folder files.

``pruned.pt`` is a plain state_dict, never a pickled module: it loads with
``torch.load(weights_only=True)`` into ``apply_plan(factory(), plan)``, so
reading a run folder never executes code from it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError, RunFolderError
from ..train.data import DataSplits
from ..train.fit import DEFAULT_BATCH_SIZE, TrainResult, train
from .apply import apply_plan
from .graph import DependencyGraph, analyze
from .macs import CostModel, count_macs_params
from .plan import DEFAULT_TARGET_MAC_RATIO, Plan, floor_groups, make_plan

DEFAULT_FINETUNE_EPOCHS = 10
DEFAULT_FINETUNE_LR = 1e-3


@dataclass
class PruneResult:
    """The pruned (and fine-tuned) model, its plan, and what pruning saved.

    MACs are per sample (batch 1); ``finetune`` is None when no fine-tuning ran.
    """

    model: nn.Module
    plan: Plan
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    finetune: TrainResult | None = None
    channels_before: int = 0
    channels_after: int = 0
    floor_groups: list[str] | None = None
    weight_sparsity: float = 0.0

    @property
    def mac_ratio(self) -> float:
        """MACs after / MACs before (0.5 = half the work)."""
        return self.macs_after / self.macs_before if self.macs_before else 1.0

    @property
    def params_ratio(self) -> float:
        """Parameters after / before: what flash scales with."""
        return self.params_after / self.params_before if self.params_before else 1.0

    @property
    def channel_ratio(self) -> float:
        """Channels kept / channels before, over every channel group.

        Not the MAC ratio: a conv's MACs scale with its input *and* output
        channels, so keeping half the channels everywhere leaves about a
        quarter of the MACs.
        """
        return self.channels_after / self.channels_before if self.channels_before else 1.0

    def ratios(self) -> dict[str, float]:
        """The three ratios side by side, as reports give them."""
        return {"channel_ratio": self.channel_ratio, "params_ratio": self.params_ratio,
                "mac_ratio": self.mac_ratio}

    def __repr__(self) -> str:
        kept = ", ".join(f"{k}: {len(v)}" for k, v in self.plan.items())
        return (
            f"PruneResult(MACs {self.macs_before} -> {self.macs_after} "
            f"({self.mac_ratio:.3f}x), params {self.params_before} -> {self.params_after} "
            f"({self.params_ratio:.3f}x), channels {self.channel_ratio:.3f}x, "
            f"kept channels {{{kept}}}, finetune={self.finetune!r})"
        )


def prune(
    model: nn.Module,
    splits: DataSplits,
    target_mac_ratio: float | None = DEFAULT_TARGET_MAC_RATIO,
    finetune_epochs: int = DEFAULT_FINETUNE_EPOCHS,
    seed: int = 0,
    *,
    ratios: Mapping[str, float] | None = None,
    criterion: str = "l1",
    protect: Iterable[str] = (),
    round_to: int = 1,
    ranking: str = "local",
    plan: Mapping[str, Sequence[int]] | None = None,
    schedule: str = "one-shot",
    steps: int = 3,
    distill: bool = False,
    weight_sparsity: float = 0.0,
    lr: float = DEFAULT_FINETUNE_LR,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
) -> PruneResult:
    """Prune ``model`` (left untouched) to ``target_mac_ratio`` of its MACs, then fine-tune.

    Pass ``ratios`` (with ``target_mac_ratio=None``) to set per-group removal
    fractions instead of a MAC target, or a ready ``plan``. ``criterion``,
    ``ranking``, ``protect`` and ``round_to`` are make_plan's. ``schedule``
    other than "one-shot" reaches the MAC target in ``steps`` steps
    (schedule.py; fine-tuning epochs are split between them); ``distill``
    fine-tunes with knowledge distillation from ``model``.
    ``weight_sparsity`` > 0 then also zeroes that fraction of the remaining
    weights by magnitude (unstructured; masks kept through fine-tuning).
    Fine-tuning trains on the train split, keeps the best validation epoch,
    and never sees the test split.
    """
    if ratios is not None or plan is not None:
        target_mac_ratio = None
    if schedule != "one-shot" and target_mac_ratio is not None:
        from .schedule import prune_scheduled

        per_step = max(1, finetune_epochs // steps) if finetune_epochs else 0
        result = prune_scheduled(model, splits, target_mac_ratio, schedule=schedule,
                                 steps=steps if schedule != "gradual" else max(
                                     steps, finetune_epochs), epochs_per_step=per_step,
                                 criterion=criterion, ranking=ranking, protect=protect,
                                 round_to=round_to, distill=distill, seed=seed,
                                 progress=progress)
        return _sparsify(result, splits, weight_sparsity, seed, progress)
    shape = (1, *splits.input_shape)
    graph = analyze(model, shape)
    if plan is None:
        plan = make_plan(model, shape, target_mac_ratio, ratios=ratios, criterion=criterion,
                         protect=protect, round_to=round_to, ranking=ranking, seed=seed,
                         data=(splits.x_train, splits.y_train), graph=graph)
    else:
        plan = Plan(plan, getattr(plan, "input_shape", None) or shape)
    pruned = apply_plan(model, plan, graph=graph)
    result = measure(model, pruned, plan, graph, shape)
    if target_mac_ratio is not None and result.macs_after > target_mac_ratio * result.macs_before:
        raise RuntimeError(
            f"pruned MACs {result.macs_after} exceed target {target_mac_ratio} x "
            f"{result.macs_before}")
    result.floor_groups = floor_groups(plan, graph, round_to)
    if finetune_epochs > 0:
        result.finetune = train(pruned, splits, epochs=finetune_epochs, lr=lr,
                                batch_size=batch_size, seed=seed, progress=progress,
                                description="fine-tune",
                                teacher=copy.deepcopy(model) if distill else None)
    pruned.eval()
    return _sparsify(result, splits, weight_sparsity, seed, progress)


def _sparsify(result: PruneResult, splits: DataSplits, sparsity: float, seed: int,
              progress: bool) -> PruneResult:
    """Unstructured magnitude pruning on top, fine-tuned with the masks held."""
    if sparsity <= 0:
        return result
    from .unstructured import apply_masks, magnitude_masks, weight_sparsity

    masks = magnitude_masks(result.model, sparsity)
    apply_masks(result.model, masks)
    train(result.model, splits, epochs=2, lr=DEFAULT_FINETUNE_LR, seed=seed, progress=progress,
          description="sparse fine-tune", after_step=lambda m: apply_masks(m, masks))
    result.weight_sparsity = weight_sparsity(result.model)
    result.model.eval()
    return result


def measure(model: nn.Module, pruned: nn.Module, plan: Plan, graph: DependencyGraph,
            shape: Sequence[int]) -> PruneResult:
    """MACs, parameters and channels of ``model`` and ``pruned``, cross-checked.

    The searches trust the cost model's prediction; a disagreement with the
    real count of the pruned model would mean the graph mis-described the
    model, so it is an error, not a footnote.
    """
    macs_before, params_before = count_macs_params(model, shape)
    macs_after, params_after = count_macs_params(pruned, shape)
    cost = CostModel(model, graph, shape)
    vec = graph.keep_vector(plan)
    if (cost.macs(vec), cost.params(vec)) != (macs_after, params_after):
        raise RuntimeError(
            f"pruned model has {macs_after} MACs / {params_after} params but the plan predicted "
            f"{cost.macs(vec)} / {cost.params(vec)}; the pruning graph does not match the model"
        )
    channels_before = sum(g.channels for g in graph.groups.values())
    channels_after = int(vec[:-1].sum())
    return PruneResult(pruned, plan, macs_before, macs_after, params_before, params_after,
                       None, channels_before, channels_after)


def save_pruned(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s state_dict (plain tensors only) to ``path`` (pruned.pt)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save(state, path)
    return path


def load_pruned(base: nn.Module, plan: Mapping[str, Sequence[int]], path: str | Path) -> nn.Module:
    """Rebuild the pruned model: cut ``base`` (e.g. ``factory()``) by ``plan``, load ``path``."""
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"pruned weights '{path}' do not exist; run the prune stage first")
    model = apply_plan(base, plan)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:
        raise ModelLoadError(
            f"pruned weights '{path}' do not fit {type(base).__name__} cut by the plan: {exc}"
        ) from exc
    return model.eval()
