"""What the prune stage does beyond prune(): board-aware defaults, the budget search,
and the report keys of prune.json.

Kept here rather than in stages.py so the stage function stays a few lines
and the pruning options live with the code that implements them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from ..train.data import DataSplits
from .api import PruneResult, prune
from .budget import fit_to_budget
from .plan import round_to_for_board
from .validation import compare_predictions

# CLI flag -> keyword of prune_for_run (the CLI passes these through as-is).
OPTION_KEYS = ("criterion", "ranking", "round_to", "protect", "fit_target", "fit_macs",
               "schedule", "steps", "distill", "weight_sparsity")


def prune_for_run(
    model: nn.Module,
    splits: DataSplits,
    target_mac_ratio: float | None,
    finetune_epochs: int,
    seed: int = 0,
    progress: bool = False,
    *,
    board: str | None = None,
    criterion: str = "l1",
    ranking: str = "local",
    round_to: int | None = None,
    protect: Iterable[str] = (),
    fit_target: str | None = None,
    fit_macs: int | None = None,
    schedule: str = "one-shot",
    steps: int = 3,
    distill: bool = False,
    weight_sparsity: float = 0.0,
    auto_fit: bool = False,
) -> tuple[PruneResult, dict[str, Any]]:
    """Prune for the run folder's board; returns the result and the extra prune.json keys.

    ``round_to`` defaults to the board's channel multiple (4 on Cortex-M4/M7).
    With ``fit_target`` the plan comes from the budget search on that board
    (``target_mac_ratio`` is then ignored; ``fit_macs`` adds a MAC budget).
    """
    protect = list(protect or ())
    if auto_fit and fit_target is None and board:
        # `microfit run --target B`: the board's real budget drives pruning, capped
        # at the asked MAC ratio, so a 2 KB Uno gets a smaller model than an M4.
        fit_target = board
        if fit_macs is None and target_mac_ratio:
            from .macs import count_macs_params

            macs_before, _ = count_macs_params(model, (1,) + tuple(splits.input_shape))
            fit_macs = int(target_mac_ratio * macs_before)
    if round_to is None:
        round_to = round_to_for_board(fit_target or board)
    fit = None
    if fit_target:
        fit = fit_to_budget(model, splits, fit_target, macs=fit_macs, criterion=criterion,
                            protect=protect, round_to=round_to, seed=seed)
    res = prune(model, splits, None if fit else target_mac_ratio, finetune_epochs, seed,
                plan=fit.plan if fit else None, criterion=criterion, protect=protect,
                round_to=round_to, ranking=fit.ranking if fit else ranking, progress=progress,
                schedule="one-shot" if fit else schedule, steps=steps, distill=distill,
                weight_sparsity=weight_sparsity)
    changes = compare_predictions(model, res.model, splits.x_test, splits.y_test,
                                  splits.class_names)
    extra: dict[str, Any] = {
        "criterion": criterion,
        "ranking": fit.ranking if fit else ranking,
        "round_to": round_to,
        "protect": protect,
        "schedule": "one-shot" if fit else schedule,
        "distill": distill,
        "weight_sparsity": res.weight_sparsity,
        "channels_before": res.channels_before,
        "channels_after": res.channels_after,
        **res.ratios(),
        "floor_groups": res.floor_groups or [],
        "groups": {name: len(kept) for name, kept in res.plan.items()},
        "finetune_val_accuracy": res.finetune.val_acc if res.finetune else None,
        **changes,
    }
    if fit is not None:
        extra["fit"] = fit.to_json()
        extra["target_mac_ratio"] = fit.target_mac_ratio  # what the search chose
    return res, extra


def sensitivity_for_run(run: Any, ratios: Iterable[float] = (0.25, 0.5, 0.75),
                        jobs: int | None = None, criterion: str = "l1",
                        progress: bool = True) -> dict[str, Any]:
    """``microfit sensitivity RUN``: the float model's table, plot in the run folder."""
    from ..stages import _load_model
    from ..train.data import load_splits
    from .sensitivity import save_sensitivity, sensitivity

    splits = load_splits(run.need("data.npz"))
    model = _load_model(run, "float.pt")
    rows = sensitivity(model, splits, tuple(ratios), criterion=criterion, jobs=jobs,
                       progress=progress)
    files = save_sensitivity(rows, run.path)
    return {"rows": rows, "files": [str(p) for p in files]}
