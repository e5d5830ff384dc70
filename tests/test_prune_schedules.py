"""Schedules, distillation, unstructured magnitude pruning and the sensitivity table."""

from __future__ import annotations

import json

import pytest
import torch

from microfit.cli import main
from microfit.prune import apply_plan, count_macs_params, load_pruned, prune, save_pruned
from microfit.prune.schedule import step_targets
from microfit.prune.sensitivity import save_sensitivity, sensitivity
from microfit.prune.unstructured import apply_masks, magnitude_masks, weight_sparsity
from microfit.train import evaluate, load_digits_splits, make_default_model, train


@pytest.fixture(scope="module")
def splits():
    return load_digits_splits(seed=0)


@pytest.fixture(scope="module")
def trained(splits):
    model = make_default_model(seed=0)
    train(model, splits, epochs=5, seed=0, progress=False)
    return model


def test_step_targets_end_at_the_target_and_gradual_prunes_early():
    assert step_targets(0.25, 2, "iterative") == pytest.approx([0.5, 0.25])
    cubic = step_targets(0.2, 4, "gradual")
    assert cubic[-1] == pytest.approx(0.2)
    drops = [a - b for a, b in zip([1.0, *cubic], cubic, strict=False)]
    assert drops == sorted(drops, reverse=True)  # most of the cut happens first
    with pytest.raises(ValueError, match="steps must be >= 1"):
        step_targets(0.5, 0, "iterative")


@pytest.mark.parametrize("schedule", ["iterative", "imp-weight-rewind", "imp-lr-rewind",
                                      "gradual"])
def test_multi_step_schedules_reach_the_target_with_one_plan_on_the_original(
        schedule, trained, splits, tmp_path):
    res = prune(trained, splits, 0.4, finetune_epochs=2, schedule=schedule, steps=2,
                distill=schedule == "iterative")
    assert res.macs_after <= 0.4 * res.macs_before
    # The composed plan rebuilds the same architecture from a fresh model.
    assert (res.macs_after, res.params_after) == count_macs_params(
        apply_plan(make_default_model(seed=5), res.plan), (1, 1, 8, 8))
    path = save_pruned(res.model, tmp_path / "pruned.pt")
    again = load_pruned(make_default_model(seed=9), res.plan, path)
    x = torch.from_numpy(splits.x_test[:5])
    with torch.no_grad():
        assert torch.equal(again(x), res.model(x))
    assert evaluate(res.model, splits.x_val, splits.y_val) > 0.5


def test_magnitude_masks_reach_the_sparsity_and_survive_fine_tuning(trained, splits):
    model = make_default_model(seed=0)
    model.load_state_dict(trained.state_dict())
    masks = magnitude_masks(model, 0.7)
    apply_masks(model, masks)
    assert weight_sparsity(model) == pytest.approx(0.7, abs=1e-3)
    train(model, splits, epochs=1, seed=0, progress=False,
          after_step=lambda m: apply_masks(m, masks))
    assert weight_sparsity(model) >= 0.7 - 1e-3
    per_layer = magnitude_masks(model, 0.5, scope="layer")
    for name, mask in per_layer.items():
        assert float(mask.mean()) == pytest.approx(0.5, abs=0.01), name


def test_prune_with_weight_sparsity_reports_it(trained, splits):
    res = prune(trained, splits, 0.5, finetune_epochs=1, weight_sparsity=0.5)
    assert res.weight_sparsity >= 0.5 - 1e-3


def test_sensitivity_table_in_worker_processes_matches_in_process(trained, splits, tmp_path):
    one = sensitivity(trained, splits, (0.5,), jobs=1, progress=False)
    two = sensitivity(trained, splits, (0.5,), jobs=2, progress=False)
    assert one == two
    assert one[0]["group"] == "" and one[0]["mac_ratio"] == 1.0
    rows = {r["group"]: r for r in one[1:]}
    assert set(rows) == {"features.0", "features.2"}
    assert rows["features.2"]["kept"] == 16 and rows["features.2"]["mac_ratio"] < 1
    files = save_sensitivity(one, tmp_path)
    assert json.loads(files[0].read_text()) == one
    assert files[1].read_text().splitlines()[0].startswith("group,ratio")


def test_bn_sparsity_training_shrinks_batchnorm_gammas(splits):
    from torch import nn

    def net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Flatten(), nn.Linear(8 * 64, 10))

    plain, sparse = net(), net()
    train(plain, splits, epochs=1, seed=0, progress=False)
    train(sparse, splits, epochs=1, seed=0, progress=False, bn_sparsity=1e-2)
    assert sparse[1].weight.abs().sum() < plain[1].weight.abs().sum()


def test_cli_sensitivity_writes_the_table(tmp_path):
    run = tmp_path / "run"
    assert main(["-q", "train", str(run), "--epochs", "1"]) == 0
    assert main(["-q", "--json", "sensitivity", str(run), "--ratios", "0.5", "--jobs", "1"]) == 0
    assert (run / "sensitivity.csv").is_file() and (run / "sensitivity.json").is_file()
