"""What the prune stage does beyond prune(): board-aware defaults, the budget search,
and the report keys of prune.json.

Kept here rather than in stages.py so the stage function stays a few lines
and the pruning options live with the code that implements them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from ..errors import FitError, MicrofitError
from ..train.data import DataSplits
from .api import PruneResult, prune
from .budget import FitResult, fit_to_budget
from .plan import round_to_for_board
from .validation import compare_predictions

# CLI flag -> keyword of prune_for_run (the CLI passes these through as-is).
OPTION_KEYS = ("criterion", "ranking", "round_to", "protect", "fit_target", "fit_macs",
               "schedule", "steps", "distill", "weight_sparsity", "fit_by", "sparsity_pattern")


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
    fit_by: str = "channels",
    sparsity_pattern: str = "unstructured",
) -> tuple[PruneResult, dict[str, Any]]:
    """Prune for the run folder's board; returns the result and the extra prune.json keys.

    ``round_to`` defaults to the board's channel multiple (4 on Cortex-M4/M7).
    With ``fit_target`` the plan comes from the budget search on that board
    (``target_mac_ratio`` is then ignored; ``fit_macs`` adds a MAC budget).
    ``fit_by`` "sparsity" or "both" lets that search zero weights (``sparsity_pattern``)
    as well as or instead of removing channels (prune/budget.py).
    """
    protect = list(protect or ())
    if fit_by != "channels" and not (fit_target or (auto_fit and board)):
        raise MicrofitError(f"--fit-by {fit_by} needs a budget to fit: give --fit-target BOARD "
                            "(or use `microfit run --target BOARD`, which fits the board)")
    if fit_by != "channels" and weight_sparsity > 0:
        raise MicrofitError(f"--weight-sparsity {weight_sparsity} and --fit-by {fit_by} both "
                            "set the weight sparsity; drop --weight-sparsity (the search "
                            "picks it) or use --fit-by channels")
    if auto_fit and fit_target is None and board:
        # `microfit run --target B`: the board's real budget drives pruning, capped
        # at the asked MAC ratio, so a 2 KB Uno gets a smaller model than an M4.
        fit_target = board
        # --fit-by sparsity keeps every channel, so it cannot honour a MAC cap: no cap then.
        if fit_macs is None and target_mac_ratio and fit_by != "sparsity":
            from .macs import count_macs_params

            macs_before, _ = count_macs_params(model, (1,) + tuple(splits.input_shape))
            fit_macs = int(target_mac_ratio * macs_before)
    if round_to is None:
        round_to = round_to_for_board(fit_target or board)
    fit = None
    if fit_target:
        fit = fit_to_budget(model, splits, fit_target, macs=fit_macs, criterion=criterion,
                            protect=protect, round_to=round_to, seed=seed, fit_by=fit_by,
                            sparsity_pattern=sparsity_pattern)
    res = prune(model, splits, None if fit else target_mac_ratio, finetune_epochs, seed,
                plan=fit.plan if fit else None, criterion=criterion, protect=protect,
                round_to=round_to, ranking=fit.ranking if fit else ranking, progress=progress,
                schedule="one-shot" if fit else schedule, steps=steps, distill=distill,
                weight_sparsity=weight_sparsity)
    if fit is not None and fit.weight_sparsity > 0:
        _sparsify_to_fit(res, splits, fit, seed, progress)
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


def _sparsify_to_fit(res: PruneResult, splits: DataSplits, fit: FitResult, seed: int,
                     progress: bool, epochs: int = 2, max_bumps: int = 3) -> None:
    """Zero ``fit.weight_sparsity`` of the fine-tuned model's weights (the search's pattern,
    masks held through ``epochs`` of fine-tuning), then size it by the real codegen. The
    masks are ranked on the fine-tuned weights, not the ones the search sized, so the
    per-layer split and the bytes can differ slightly: while it does not fit, add 2 points
    of sparsity (masks only grow) up to ``max_bumps`` times, else raise FitError."""
    from .budget import MAX_FIT_SPARSITY, size_model
    from .unstructured import sparsify, weight_sparsity

    shape = (1, *splits.input_shape)
    calib = splits.x_train[:200]
    s = fit.weight_sparsity
    pattern = fit.sparsity_pattern or "unstructured"
    sparsify(res.model, splits, s, pattern=pattern, epochs_per_step=epochs, seed=seed,
             progress=progress)
    size = size_model(res.model, shape, calib, fit.budget.board or "host")
    for _ in range(max_bumps):
        if fit.budget.fits(size) or s >= MAX_FIT_SPARSITY:
            break
        s = min(MAX_FIT_SPARSITY, s + 0.02)
        sparsify(res.model, splits, s, pattern=pattern, epochs_per_step=1, seed=seed,
                 progress=progress)
        size = size_model(res.model, shape, calib, fit.budget.board or "host")
    if not fit.budget.fits(size):
        raise FitError(f"the budget search chose {fit.weight_sparsity:.0%} {pattern} sparsity, "
                       f"but after fine-tuning the model at {s:.0%} needs flash {size.flash:,} B; "
                       + fit.budget.describe() + ". Use --fit-by channels or a larger board")
    fit.weight_sparsity = s
    fit.size = size
    res.weight_sparsity = weight_sparsity(res.model)
    res.model.eval()


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
