"""Pruning schedules: how the way to the target is split into steps.

- ``one-shot``: prune to the target, fine-tune once.
- ``iterative``: N steps, each removing the same fraction of the MACs left
  (targets t^(k/N)), fine-tuning between steps.
- ``imp-weight-rewind``: iterative, but after each cut the surviving weights
  go back to ``rewind_state`` (default: the weights pruning started from)
  and are retrained with the training learning rate (Frankle et al.'s
  rewinding, applied to channels).
- ``imp-lr-rewind``: iterative, keeping the weights but retraining each step
  with the training learning rate and schedule from the start (Renda et al.).
- ``gradual``: prune a little every epoch of fine-tuning, on Zhu & Gupta's
  cubic schedule, most of it early while the network can still adapt.

Every schedule ends with one plan on the *original* model (compose_plans), so
the result reapplies to a fresh model from the user's factory like a one-shot
plan. ``distill`` fine-tunes with knowledge distillation from the unpruned
model.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

from torch import nn

from ..train.data import DataSplits
from ..train.fit import DEFAULT_LR, TrainResult, train
from .api import DEFAULT_FINETUNE_LR, PruneResult, measure
from .apply import apply_plan
from .graph import analyze
from .macs import count_macs_params
from .plan import Plan, compose_plans, floor_groups, make_plan

SCHEDULES = ("one-shot", "iterative", "imp-weight-rewind", "imp-lr-rewind", "gradual")


def step_targets(target: float, steps: int, schedule: str) -> list[float]:
    """MAC ratio (of the original) to reach after each step; the last is ``target``."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if schedule == "one-shot":
        return [target]
    if schedule == "gradual":
        # Zhu & Gupta: s_t = s_f (1 - (1 - t/n)^3), here on the removed MAC fraction.
        removed = 1.0 - target
        return [1.0 - removed * (1.0 - (1.0 - k / steps) ** 3) for k in range(1, steps + 1)]
    return [target ** (k / steps) for k in range(1, steps + 1)]


def prune_scheduled(
    model: nn.Module,
    splits: DataSplits,
    target_mac_ratio: float,
    *,
    schedule: str = "iterative",
    steps: int = 3,
    epochs_per_step: int = 3,
    criterion: str = "l1",
    ranking: str = "local",
    protect: Iterable[str] = (),
    round_to: int = 1,
    distill: bool = False,
    rewind_state: Mapping[str, object] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> PruneResult:
    """Prune ``model`` (left untouched) to ``target_mac_ratio`` on ``schedule``.

    ``gradual`` uses ``steps`` epochs of one epoch each; the others fine-tune
    ``epochs_per_step`` epochs after every step. Returns a PruneResult whose
    plan applies to the original model and whose ``finetune`` is the last
    step's training.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    shape = (1, *splits.input_shape)
    macs0 = count_macs_params(model, shape)[0]
    teacher = copy.deepcopy(model).eval() if distill else None
    rewind = copy.deepcopy(model)
    if rewind_state is not None:
        rewind.load_state_dict(rewind_state)
    current = copy.deepcopy(model)
    total = Plan({}, shape)
    last: TrainResult | None = None
    epochs = 1 if schedule == "gradual" else epochs_per_step
    lr = DEFAULT_LR if schedule.startswith("imp-") else DEFAULT_FINETUNE_LR
    for goal in step_targets(target_mac_ratio, steps if schedule != "one-shot" else 1, schedule):
        now = count_macs_params(current, shape)[0]
        ratio = min(1.0, goal * macs0 / now)
        if ratio < 1.0:
            step_plan = make_plan(current, shape, ratio, criterion=criterion, ranking=ranking,
                                  protect=protect, round_to=round_to, seed=seed,
                                  data=(splits.x_train, splits.y_train))
            current = apply_plan(current, step_plan)
            total = compose_plans(total, step_plan)
            if schedule == "imp-weight-rewind":
                current = apply_plan(rewind, total)
        if epochs > 0:
            last = train(current, splits, epochs=epochs, lr=lr, seed=seed, progress=progress,
                         description=f"{schedule} step", teacher=teacher)
    graph = analyze(model, shape)
    result = measure(model, current.eval(), total, graph, shape)
    result.floor_groups = floor_groups(total, graph, round_to)
    result.finetune = last
    return result
