"""The budget search choosing weight sparsity (``fit_by``): sized by the real codegen with
sparse storage, sparsity buys flash but never RAM, and the CLI's --fit-by."""

from __future__ import annotations

import pytest

from microfit.cli import main
from microfit.errors import FitError, MicrofitError
from microfit.prune.budget import (
    Budget,
    _SparsitySizer,
    fit_to_budget,
    least_sparsity_to_fit,
    size_model,
    size_sparse,
)
from microfit.prune.stage import prune_for_run
from microfit.train import load_digits_splits, make_default_model, train

SHAPE = (1, 1, 8, 8)


@pytest.fixture(scope="module")
def splits():
    return load_digits_splits(seed=0)


@pytest.fixture(scope="module")
def trained(splits):
    model = make_default_model(seed=0)
    train(model, splits, epochs=2, seed=0, progress=False)
    return model


@pytest.fixture(scope="module")
def dense(trained, splits):
    return size_model(trained, SHAPE, splits.x_train[:50])


def test_sparse_size_is_the_codegen_s_compressed_weights(trained, splits, dense):
    at80 = size_sparse(trained, 0.8, "unstructured", SHAPE, splits.x_train[:50])
    assert at80.flash < 0.6 * dense.flash  # stored compressed, with indices
    assert at80.ram == dense.ram and at80.macs == dense.macs  # sparsity buys flash only
    # The search's shortcut (one export, masked weights swapped into the ONNX) sizes the same.
    sizer = _SparsitySizer(trained, SHAPE, splits.x_train[:50], "host")
    assert sizer.size(0.8, "unstructured") == at80
    assert sizer.size(0.0, "unstructured") == dense
    block = sizer.size(0.8, "block")
    assert block.flash < 0.6 * dense.flash


def test_least_sparsity_is_the_smallest_that_fits(trained, splits, dense):
    budget = Budget(flash_bytes=int(dense.flash * 0.6), ram_bytes=1 << 20, source="test")
    s, size = least_sparsity_to_fit(trained, budget, "unstructured", SHAPE, splits.x_train[:50])
    assert s is not None and 0.3 < s < 0.95
    assert budget.fits(size)
    sizer = _SparsitySizer(trained, SHAPE, splits.x_train[:50], "host")
    assert not budget.fits(sizer.size(s - 0.02, "unstructured"))  # 2 points less: no fit


def test_fit_by_sparsity_keeps_every_channel_and_fits_the_flash(trained, splits, dense):
    budget = Budget(flash_bytes=int(dense.flash * 0.5), ram_bytes=1 << 20, source="test")
    fit = fit_to_budget(trained, splits, budget, fit_by="sparsity", search_epochs=0,
                        calibration_samples=50)
    assert fit.plan == {} and fit.target_mac_ratio == 1.0
    assert fit.weight_sparsity > 0.4 and budget.fits(fit.size)
    assert fit.to_json()["fit_by"] == "sparsity"
    assert fit.to_json()["weight_sparsity"] == fit.weight_sparsity


def test_fit_by_sparsity_cannot_buy_ram_and_says_to_use_both(trained, splits, dense):
    budget = Budget(flash_bytes=1 << 20, ram_bytes=dense.ram - 1, source="test")
    with pytest.raises(FitError, match=r"sparsity saves flash only.*--fit-by both"):
        fit_to_budget(trained, splits, budget, fit_by="sparsity", search_epochs=0,
                      calibration_samples=50)


def test_fit_by_both_prunes_channels_for_ram_and_picks_the_best_candidate(trained, splits,
                                                                            dense):
    # RAM forces channel pruning; flash is tight enough that sparsity can help too.
    budget = Budget(flash_bytes=int(dense.flash * 0.3), ram_bytes=int(dense.ram * 0.75),
                    source="test")
    fit = fit_to_budget(trained, splits, budget, fit_by="both", rankings=("local",),
                        search_epochs=1, round_to=1, calibration_samples=50, bisect_steps=1)
    assert budget.fits(fit.size) and fit.plan  # channels were removed
    kinds = {c["kind"] for c in fit.candidates}
    assert "channels only" in kinds and "channels for RAM + sparsity" in kinds
    judged = [c for c in fit.candidates if c.get("val_accuracy") is not None]
    assert len(judged) >= 2
    assert fit.val_accuracy == max(c["val_accuracy"] for c in judged)


def test_prune_for_run_sparsifies_the_final_model_to_the_budget(trained, splits, dense):
    import copy

    budget = Budget(flash_bytes=int(dense.flash * 0.5), ram_bytes=1 << 20, source="test")
    res, extra = prune_for_run(copy.deepcopy(trained), splits, 0.5, 0, fit_target=budget,
                               round_to=1, fit_by="sparsity")
    assert extra["fit"]["fit_by"] == "sparsity" and res.weight_sparsity > 0.4
    assert extra["groups"] == {}  # no channel removed
    final = size_model(res.model, SHAPE, splits.x_train[:200])
    assert budget.fits(final)  # the model that goes on, not only the searched one
    assert extra["weight_sparsity"] == res.weight_sparsity


def test_fit_by_needs_a_budget_and_excludes_weight_sparsity(trained, splits):
    with pytest.raises(MicrofitError, match="needs a budget to fit: give --fit-target"):
        prune_for_run(trained, splits, 0.5, 0, fit_by="both")
    with pytest.raises(MicrofitError, match="both set the weight sparsity"):
        prune_for_run(trained, splits, 0.5, 0, fit_target="simavr-uno", fit_by="sparsity",
                      weight_sparsity=0.5)
    with pytest.raises(ValueError, match="fit_by must be one of"):
        fit_to_budget(trained, splits, Budget(1, 1), fit_by="weights")


def test_cli_fit_by_sparsity_on_the_uno_is_a_fit_error_naming_ram(tmp_path, capsys):
    from microfit.cli import build_parser

    assert build_parser().parse_args(["prune", "x"]).fit_by == "channels"  # today's default
    run = tmp_path / "run"
    assert main(["-q", "train", str(run), "--epochs", "1"]) == 0
    code = main(["-q", "prune", str(run), "--finetune-epochs", "0",
                 "--fit-target", "simavr-uno", "--fit-by", "sparsity"])
    assert code != 0
    err = capsys.readouterr()
    assert "sparsity saves flash only" in err.out + err.err
    assert not (run / "prune.json").exists()


def test_final_sparsity_too_low_for_the_budget_is_bumped_then_a_fit_error(trained, splits,
                                                                           dense):
    import copy

    from microfit.prune import Plan, prune
    from microfit.prune.budget import FitResult
    from microfit.prune.stage import _sparsify_to_fit

    budget = Budget(flash_bytes=int(dense.flash * 0.5), ram_bytes=1 << 20, source="test")
    res = prune(copy.deepcopy(trained), splits, None, 0, plan=Plan({}, SHAPE))
    fit = FitResult(plan=Plan({}, SHAPE), target_mac_ratio=1.0, ranking="local", size=dense,
                    budget=budget, val_accuracy=None, weight_sparsity=0.1,
                    sparsity_pattern="unstructured", fit_by="sparsity")
    # 10% leaves the model far over half its dense flash; three 2-point bumps cannot fix that.
    with pytest.raises(FitError, match=r"chose 10% unstructured sparsity, but after "
                                       r"fine-tuning the model at 16% needs flash"):
        _sparsify_to_fit(res, splits, fit, seed=0, progress=False, epochs=0)
