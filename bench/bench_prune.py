"""Structured pruning side by side: microfit vs Torch-Pruning vs training the pruned widths
from scratch, on the same model, data, MAC target and fine-tune budget.

Task: scikit-learn's digits resized to 12x12, shifted at random on a 16x16
canvas with Gaussian noise (so a ResNet-8 has spatial work to lose and
capacity matters), the usual seeded train / validation / test split. Models: MLPerf Tiny's
ResNet-8 and a DS-CNN (keyword-spotting shape), one input channel.

For each model: train the float model once; then each method prunes that same
model to the same MAC target (microfit's own MAC count for everyone) and
fine-tunes for the same epochs with the same optimiser and schedule
(microfit.train.train); the checkpoint is the best *validation* epoch, and the
test split is only evaluated. Torch-Pruning's ratio is a channel ratio, so it
is bisected until its model has no more MACs than the target allows. The
from-scratch baseline re-initialises microfit's pruned architecture and
trains it for the fine-tune budget.
"""

from __future__ import annotations

import copy
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from microfit.prune import apply_plan, count_macs_params, make_plan
from microfit.train import DataSplits, evaluate, load_digits_splits, train
from microfit.train.models import instantiate

from .common import BenchResult

ROOT = Path(__file__).resolve().parent.parent
IMAGE = 16
MAC_TARGET = 0.25


def _models():
    spec = importlib.util.spec_from_file_location("prune_models", ROOT / "tests" / "prune_models.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return {
        "resnet8": lambda: mod.ResNet8(num_classes=10, in_ch=1),
        "ds_cnn": lambda: mod.DSCNN(num_classes=10, width=64, blocks=4, in_ch=1),
    }


def upscaled_digits(size: int = IMAGE, digit: int = 12, noise: float = 0.3,
                    seed: int = 0) -> DataSplits:
    """The digits splits made harder: each image resized (bilinear) to ``digit`` x ``digit``,
    placed at a seeded random offset on a ``size`` x ``size`` canvas, plus Gaussian noise.

    Plain digits are so easy that every method scores ~99% at any MAC budget,
    which measures nothing; shifted, noisy digits make capacity matter.
    """
    base = load_digits_splits(seed=seed)
    rng = np.random.default_rng(seed)

    def harder(x: np.ndarray) -> np.ndarray:
        t = F.interpolate(torch.from_numpy(x), size=(digit, digit), mode="bilinear",
                          align_corners=False).numpy()
        out = np.zeros((len(x), 1, size, size), dtype=np.float32)
        offs = rng.integers(0, size - digit + 1, size=(len(x), 2))
        for i, (r, c) in enumerate(offs):
            out[i, :, r:r + digit, c:c + digit] = t[i]
        out += rng.normal(0.0, noise, out.shape).astype(np.float32)
        return out

    return DataSplits(harder(base.x_train), base.y_train, harder(base.x_val), base.y_val,
                      harder(base.x_test), base.y_test, (1, size, size), base.num_classes,
                      base.class_names)


def _last_linear(model: nn.Module) -> nn.Module:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def torch_pruning_to_target(model: nn.Module, shape: tuple[int, ...], max_macs: int
                            ) -> tuple[nn.Module, float]:
    """Torch-Pruning (L1 magnitude, per layer) at the smallest ratio whose MACs <= max_macs
    (the last grid ratio's model if none fits)."""
    import torch_pruning as tp

    example = torch.zeros(shape)

    def pruned_at(ratio: float) -> nn.Module:
        net = copy.deepcopy(model).eval()
        pruner = tp.pruner.MetaPruner(
            net, example, importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=ratio, ignored_layers=[_last_linear(net)], global_pruning=False)
        pruner.step()
        return net

    # Torch-Pruning's MACs are not monotone in its ratio (at high ratios it can
    # leave a coupled group whole), so scan a grid for the first ratio that
    # fits, then bisect between it and the grid point before.
    grid = [round(0.05 * k, 2) for k in range(1, 20)]
    prev = 0.0
    for ratio in grid:
        net = pruned_at(ratio)
        if count_macs_params(net, shape)[0] <= max_macs:
            lo, hi, best = prev, ratio, net
            break
        prev = ratio
    else:
        return net, grid[-1]
    for _ in range(6):
        mid = (lo + hi) / 2
        net = pruned_at(mid)
        if count_macs_params(net, shape)[0] <= max_macs:
            hi, best = mid, net
        else:
            lo = mid
    return best, hi


def _row(model_name: str, method: str, net: nn.Module, splits: DataSplits,
         shape: tuple[int, ...], val: float | None, seconds: float) -> dict:
    macs, params = count_macs_params(net, shape)
    return {"model": model_name, "method": method, "macs": macs, "params": params,
            "val_acc": val, "test_acc": evaluate(net, splits.x_test, splits.y_test),
            "seconds": round(seconds, 1)}


def run(quick: bool = False) -> BenchResult:
    float_epochs, ft_epochs = (6, 3) if quick else (20, 10)
    splits = upscaled_digits()
    shape = (1, *splits.input_shape)
    rows: list[dict] = []
    notes = [
        f"digits resized to 12x12 at random offsets on a {IMAGE}x{IMAGE} canvas, Gaussian "
        f"noise 0.3; train {len(splits.y_train)}, val "
        f"{len(splits.y_val)}, test {len(splits.y_test)}; MAC target {MAC_TARGET}; float "
        f"training {float_epochs} epochs, every fine-tune / scratch run {ft_epochs} epochs "
        "(Adam, cosine decay, checkpoint = best validation epoch)",
        "microfit l1 and Torch-Pruning MagnitudeImportance(p=1) both score a channel by all "
        "its coupled weights (filters, BatchNorm, next layers' inputs); Torch-Pruning's "
        "channel ratio is bisected to the MAC budget (its MACs jump between ratios, so it "
        "may land below it)",
        "round_to=4 is microfit's default on Cortex-M4/M7 (channel counts a multiple of 4)",
    ]
    for name, factory in _models().items():
        t0 = time.time()
        model = instantiate(factory, seed=0)
        res = train(model, splits, epochs=float_epochs, seed=0, progress=False)
        model.eval()
        rows.append(_row(name, "float", model, splits, shape, res.val_acc, time.time() - t0))
        macs_before = count_macs_params(model, shape)[0]
        budget = int(MAC_TARGET * macs_before)

        scratch_plan = None
        for method, kwargs in (("microfit l1 local", {"ranking": "local"}),
                               ("microfit l1 global", {"ranking": "global"}),
                               ("microfit l1 local round_to=4", {"ranking": "local",
                                                                 "round_to": 4}),
                               ("microfit taylor local", {"ranking": "local",
                                                          "criterion": "taylor"})):
            t0 = time.time()
            kwargs = {"criterion": "l1", **kwargs}
            plan = make_plan(model, shape, MAC_TARGET, data=(splits.x_train, splits.y_train),
                             **kwargs)
            net = apply_plan(model, plan)
            ft = train(net, splits, epochs=ft_epochs, lr=1e-3, seed=0, progress=False)
            rows.append(_row(name, method, net.eval(), splits, shape, ft.val_acc,
                             time.time() - t0))
            scratch_plan = scratch_plan or plan

        t0 = time.time()
        try:
            net, ratio = torch_pruning_to_target(model, shape, budget)
            ft = train(net, splits, epochs=ft_epochs, lr=1e-3, seed=0, progress=False)
            row = _row(name, "torch-pruning l1 local", net.eval(), splits, shape, ft.val_acc,
                       time.time() - t0)
            row["method"] += f" (ratio {ratio:.3f})"
            rows.append(row)
        except ImportError:
            notes.append("torch-pruning is not installed: pip install -e '.[bench]'")

        t0 = time.time()
        fresh = apply_plan(instantiate(factory, seed=1), scratch_plan)
        sc = train(fresh, splits, epochs=ft_epochs, seed=0, progress=False)
        rows.append(_row(name, "scratch (microfit local widths)", fresh.eval(), splits, shape,
                         sc.val_acc, time.time() - t0))
    return BenchResult(
        "prune", "Structured pruning at equal MACs: microfit vs Torch-Pruning vs from scratch",
        ["model", "method", "macs", "params", "val_acc", "test_acc", "seconds"], rows, notes)
