"""Budget-driven pruning: fit a board's flash/RAM (sized by the real codegen), or
say with numbers why nothing fits; and the prune stage's report keys."""

from __future__ import annotations

import json

import pytest

from microfit.cli import main
from microfit.errors import FitError
from microfit.prune.budget import Budget, fit_to_budget, size_model
from microfit.prune.validation import compare_predictions
from microfit.train import load_digits_splits, make_default_model, train

# An Arduino Uno: 32 KB flash, 2 KB RAM, minus the AVR firmware estimate.
UNO = Budget(flash_bytes=32 * 1024 - 8 * 1024, ram_bytes=2 * 1024 - 768, source="test")


@pytest.fixture(scope="module")
def splits():
    return load_digits_splits(seed=0)


@pytest.fixture(scope="module")
def trained(splits):
    model = make_default_model(seed=0)
    train(model, splits, epochs=4, seed=0, progress=False)
    return model


def test_default_model_is_pruned_until_it_fits_an_uno_sized_budget(trained, splits):
    full = size_model(trained, (1, 1, 8, 8), splits.x_train[:50])
    assert not UNO.fits(full)  # the unpruned model's arena is over 2 KB
    fit = fit_to_budget(trained, splits, UNO, rankings=("local",), search_epochs=0,
                        round_to=1, calibration_samples=50, bisect_steps=3)
    assert UNO.fits(fit.size)
    assert fit.size.ram <= UNO.ram_bytes and fit.size.flash <= UNO.flash_bytes
    assert 0 < fit.target_mac_ratio < 1
    assert fit.plan  # something was pruned
    assert fit.candidates[0]["ram_bytes"] == fit.size.ram


def test_a_budget_nothing_fits_is_a_fit_error_with_the_smallest_size_and_the_budget(
        trained, splits):
    tiny = Budget(flash_bytes=24 * 1024, ram_bytes=100, source="test")
    with pytest.raises(FitError, match=r"no pruning level fits: the smallest model.*needs "
                                       r"flash [\d,]+ B, RAM [\d,]+ B.*RAM 100 B"):
        fit_to_budget(trained, splits, tiny, search_epochs=0, calibration_samples=50)


def test_compare_predictions_lists_per_class_accuracy_and_changed_samples(trained, splits):
    other = make_default_model(seed=3)
    out = compare_predictions(trained, other, splits.x_test, splits.y_test, splits.class_names)
    assert len(out["per_class"]) == 10
    row = out["per_class"][0]
    assert set(row) == {"class", "name", "samples", "accuracy_before", "accuracy_after", "delta"}
    assert out["changed_count"] == len(out["changed_predictions"]) > 0
    assert out["broken_count"] >= out["fixed_count"]  # an untrained model breaks more
    ch = out["changed_predictions"][0]
    assert ch["before"] != ch["after"]


def test_cli_prune_fits_a_board_and_reports_the_three_ratios(tmp_path):
    run = tmp_path / "run"
    assert main(["-q", "train", str(run), "--epochs", "2"]) == 0
    code = main(["-q", "--json", "prune", str(run), "--finetune-epochs", "1",
                 "--fit-target", "qemu-mps2-an386", "--ranking", "global"])
    assert code == 0
    info = json.loads((run / "prune.json").read_text())
    for key in ("macs_before", "macs_after", "params_before", "params_after", "mac_ratio",
                "float_test_accuracy", "pruned_test_accuracy", "target_mac_ratio",
                "finetune_epochs", "channel_ratio", "params_ratio", "per_class",
                "changed_predictions", "round_to", "fit"):
        assert key in info, key
    assert info["round_to"] == 4  # Cortex-M4
    # 4 MB of RAM: the unpruned model fits, so the search prunes nothing.
    assert info["fit"]["target_mac_ratio"] == 1.0 and info["mac_ratio"] == 1.0
    assert info["fit"]["budget"]["firmware_flash"] > 0
