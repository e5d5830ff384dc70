"""The prune stage's entry point: plan, cut, fine-tune, and the run-folder files.

``pruned.pt`` is a plain state_dict, never a pickled module: it loads with
``torch.load(weights_only=True)`` into ``apply_plan(factory(), plan)``, so
reading a run folder never executes code from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError, RunFolderError
from ..train.data import DataSplits
from ..train.fit import DEFAULT_BATCH_SIZE, TrainResult, train
from .apply import apply_plan
from .graph import analyze
from .macs import count_macs_params, layer_macs
from .plan import DEFAULT_TARGET_MAC_RATIO, Plan, estimate_macs, make_plan

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

    @property
    def mac_ratio(self) -> float:
        """MACs after / MACs before (0.5 = half the work)."""
        return self.macs_after / self.macs_before if self.macs_before else 1.0

    def __repr__(self) -> str:
        kept = ", ".join(f"{k}: {len(v)}" for k, v in self.plan.items())
        return (
            f"PruneResult(MACs {self.macs_before} -> {self.macs_after} "
            f"({self.mac_ratio:.3f}x), params {self.params_before} -> {self.params_after}, "
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
    lr: float = DEFAULT_FINETUNE_LR,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
) -> PruneResult:
    """Prune ``model`` (left untouched) to ``target_mac_ratio`` of its MACs, then fine-tune.

    Pass ``ratios`` (with ``target_mac_ratio=None``) to set per-layer removal
    fractions instead of a MAC target. Fine-tuning trains on the train split,
    keeps the best validation epoch, and never sees the test split.
    """
    if ratios is not None:
        target_mac_ratio = None
    shape = (1, *splits.input_shape)
    macs_before, params_before = count_macs_params(model, shape)
    plan = make_plan(model, shape, target_mac_ratio, ratios=ratios, criterion=criterion,
                     protect=protect, round_to=round_to)
    pruned = apply_plan(model, plan)
    macs_after, params_after = count_macs_params(pruned, shape)
    # The search trusts its MAC estimate; a disagreement with the real count
    # would mean the graph mis-described the model, so say so loudly.
    estimate = estimate_macs(analyze(model), layer_macs(model, shape),
                             {k: len(v) for k, v in plan.items()})
    if estimate != macs_after:
        raise RuntimeError(
            f"pruned model has {macs_after} MACs but the plan predicted {estimate}; "
            "the pruning graph does not match the model"
        )
    if target_mac_ratio is not None and macs_after > target_mac_ratio * macs_before:
        raise RuntimeError(
            f"pruned MACs {macs_after} exceed target {target_mac_ratio} x {macs_before}"
        )
    finetune = None
    if finetune_epochs > 0:
        finetune = train(pruned, splits, epochs=finetune_epochs, lr=lr, batch_size=batch_size,
                         seed=seed, progress=progress, description="fine-tune")
    pruned.eval()
    return PruneResult(pruned, plan, macs_before, macs_after, params_before, params_after,
                       finetune)


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
