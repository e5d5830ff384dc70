"""Deterministic training and evaluation on DataSplits.

Determinism (DESIGN invariant 5) needs three things here: a seeded RNG for
shuffling and dropout, deterministic kernels, and a fixed thread count (CPU
reductions split work by thread, and the split changes float rounding). The
global settings are restored afterwards so a caller's process is unchanged.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import DataSplits

DEFAULT_EPOCHS = 15
DEFAULT_LR = 3e-3
DEFAULT_BATCH_SIZE = 32
EVAL_BATCH_SIZE = 1024


@dataclass
class TrainResult:
    """What training did: per-epoch history and the checkpoint it kept.

    ``history`` holds one dict per epoch: ``epoch`` (1-based), ``loss`` (mean
    training loss), ``train_acc`` (running, in train mode) and ``val_acc``.
    ``best_epoch`` is the epoch whose weights the model now holds (0 when no
    epoch ran); ``val_acc`` is its validation accuracy.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    val_acc: float = 0.0

    def __repr__(self) -> str:
        return (f"TrainResult(epochs={len(self.history)}, best_epoch={self.best_epoch}, "
                f"val_acc={self.val_acc:.4f})")


@contextlib.contextmanager
def deterministic_torch(seed: int, threads: int = 1) -> Iterator[None]:
    """Seed torch, force deterministic kernels and a fixed thread count, then restore."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        # warn_only: an op without a deterministic CPU kernel in a user's model
        # should warn, not stop training ("deterministic where possible").
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
            torch.set_num_threads(prev_threads)


def _progress(enabled: bool):  # -> rich.progress.Progress
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
    )


def train(
    model: nn.Module,
    splits: DataSplits,
    epochs: int = DEFAULT_EPOCHS,
    lr: float = DEFAULT_LR,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    progress: bool = True,
    *,
    description: str = "train",
    teacher: nn.Module | None = None,
    kd_alpha: float = 0.5,
    kd_temperature: float = 4.0,
    bn_sparsity: float = 0.0,
    after_step: Callable[[nn.Module], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place with Adam and a cosine learning-rate decay.

    The weights kept at the end are those of the epoch with the best
    validation accuracy; on ties the later epoch wins, since a small
    validation set ties often and the later weights have trained longer. The
    test split is never looked at. The decay lets short runs (fine-tuning a
    pruned model for a few epochs) settle instead of ending on a large step.

    Options for pruning: ``teacher`` distils from another model (Hinton et
    al.: ``kd_alpha`` of the loss is the KL divergence to the teacher's
    softened outputs at ``kd_temperature``, scaled by T^2 so its gradients
    keep their size); ``bn_sparsity`` adds that factor times the L1 norm of
    every BatchNorm's gamma (network slimming: unneeded channels' gammas go
    towards 0, so "bn_scale" pruning removes them with little loss);
    ``after_step(model)`` runs after each optimiser step (e.g. to re-apply
    a sparsity mask).
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    result = TrainResult()
    with deterministic_torch(seed):
        if epochs == 0:
            result.val_acc = evaluate(model, splits.x_val, splits.y_val)
            return result
        x = torch.from_numpy(splits.x_train)
        y = torch.from_numpy(splits.y_train)
        n = len(y)
        steps_per_epoch = (n + batch_size - 1) // batch_size
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
        best_state: dict[str, torch.Tensor] | None = None
        best_acc = -1.0
        with _progress(progress) as bar:
            task = bar.add_task(description, total=epochs)
            if teacher is not None:
                teacher.eval()
            for epoch in range(1, epochs + 1):
                model.train()
                perm = torch.randperm(n, generator=gen)
                loss_sum = 0.0
                correct = 0
                for start in range(0, n, batch_size):
                    idx = perm[start:start + batch_size]
                    xb, yb = x[idx], y[idx]
                    logits = model(xb)
                    loss = F.cross_entropy(logits, yb)
                    if teacher is not None:
                        with torch.no_grad():
                            soft = F.log_softmax(teacher(xb) / kd_temperature, dim=1)
                        kd = F.kl_div(F.log_softmax(logits / kd_temperature, dim=1), soft,
                                      reduction="batchmean", log_target=True)
                        loss = (1 - kd_alpha) * loss + kd_alpha * kd_temperature ** 2 * kd
                    if bn_sparsity > 0:
                        loss = loss + bn_sparsity * sum(
                            m.weight.abs().sum() for m in model.modules()
                            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    if after_step is not None:
                        with torch.no_grad():
                            after_step(model)
                    loss_sum += float(loss.detach()) * len(idx)
                    correct += int((logits.detach().argmax(1) == yb).sum())
                val_acc = evaluate(model, splits.x_val, splits.y_val)
                result.history.append({
                    "epoch": epoch,
                    "loss": loss_sum / n,
                    "train_acc": correct / n,
                    "val_acc": val_acc,
                })
                if val_acc >= best_acc:
                    best_acc = val_acc
                    result.best_epoch = epoch
                    best_state = copy.deepcopy(model.state_dict())
                bar.update(task, advance=1,
                           description=f"{description} loss {loss_sum / n:.3f} val {val_acc:.3f}")
        assert best_state is not None
        model.load_state_dict(best_state)
        model.eval()
        result.val_acc = best_acc
    return result


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Float32 logits ``[N, num_classes]`` in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        outs = [model(xt[i:i + batch_size]) for i in range(0, len(xt), batch_size)]
    finally:
        model.train(was_training)
    if not outs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outs).numpy()


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy in [0, 1]; predicted labels are ``predict(model, x).argmax(1)``."""
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty split")
    pred = predict(model, x).argmax(axis=1)
    return float((pred == np.asarray(y)).mean())
