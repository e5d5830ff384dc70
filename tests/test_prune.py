"""Structured pruning: real channel removal, equivalence with masking, MAC targets,
plans as files, criteria and rankings, and clear refusals for what is not supported."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from microfit.errors import UnsupportedOpError
from microfit.prune import (
    analyze,
    apply_plan,
    count_macs_params,
    layer_macs,
    load_plan,
    load_pruned,
    make_plan,
    mask_model,
    prune,
    save_plan,
    save_pruned,
)
from microfit.train import evaluate, load_digits_splits, make_default_model, predict, train


@pytest.fixture(scope="module")
def splits():
    return load_digits_splits(seed=0)


@pytest.fixture(scope="module")
def trained(splits):
    model = make_default_model(seed=0)
    train(model, splits, seed=0, progress=False)
    return model


class BNNet(nn.Module):
    """Nested Sequentials, BatchNorm, functional ops, global pooling, two Linears."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU6())
        self.body = nn.Sequential(
            nn.Sequential(nn.Conv2d(12, 20, 3, stride=2, padding=1), nn.BatchNorm2d(20)),
            nn.Dropout(0.1),
            nn.Conv2d(20, 24, 1),
            nn.AvgPool2d(2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(24, 16)
        self.bn1 = nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(self.body(x))
        x = torch.flatten(self.pool(x), 1)
        return self.fc2(F.relu(self.bn1(self.fc1(x))))


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics, so a masked channel is only 0 if BN is masked too."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen))
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=gen))
            m.bias.data.copy_(torch.randn(n, generator=gen))
    return model.eval()


def test_count_macs_params_of_default_model():
    macs, params = count_macs_params(make_default_model(), (1, 1, 8, 8))
    # conv1 8*8*16*9*1 + conv2 8*8*32*9*16 + fc 512*10
    assert macs == 9216 + 294912 + 5120
    assert params == (144 + 16) + (4608 + 32) + (5120 + 10)


def test_count_macs_follows_stride_padding_and_groups():
    conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2)
    assert layer_macs(nn.Sequential(conv), (1, 4, 10, 10)) == {"0": 5 * 5 * 8 * 9 * 2}


def test_pruned_model_equals_masked_original_and_is_smaller(trained, splits):
    plan = make_plan(trained, (1, *splits.input_shape), 0.5)
    pruned = apply_plan(trained, plan)
    masked = mask_model(trained, plan)
    diff = np.abs(predict(pruned, splits.x_test) - predict(masked, splits.x_test)).max()
    assert diff <= 1e-5
    assert pruned.features[0].out_channels == len(plan["features.0"]) < 16
    assert pruned.features[2].in_channels == len(plan["features.0"])
    assert pruned.features[2].out_channels == len(plan["features.2"]) < 32
    assert pruned.classifier.in_features == len(plan["features.2"]) * 4 * 4
    assert pruned.classifier.out_features == 10
    # The original is untouched.
    assert trained.features[0].out_channels == 16


def test_pruning_bn_model_with_nested_sequentials_matches_mask():
    torch.manual_seed(0)
    model = _randomize_bn(BNNet())
    graph = analyze(model, (1, 3, 16, 16))
    assert graph.groups["stem.0"].channelwise == ["stem.1"]
    assert graph.groups["body.2"].consumers == [("fc1", 1)]
    assert graph.groups["fc1"].channelwise == ["bn1"] and not graph.groups["fc2"].prunable
    plan = make_plan(model, (1, 3, 16, 16), ratios={"stem.0": 0.5, "body.0.0": 0.4,
                                                 "body.2": 0.25, "fc1": 0.5})
    pruned = apply_plan(model, plan).eval()
    masked = mask_model(model, plan).eval()
    x = torch.rand(8, 3, 16, 16)
    with torch.no_grad():
        assert (pruned(x) - masked(x)).abs().max() <= 1e-5
        # Masking that skipped BatchNorm would leave the removed channels non-zero.
        assert (model(x) - masked(x)).abs().max() > 1e-3
    assert pruned.stem[1].num_features == 6 and pruned.bn1.num_features == 8
    assert pruned.body[0][0].in_channels == 6


def test_target_half_cuts_macs_at_least_2x(trained, splits):
    result = prune(trained, splits, target_mac_ratio=0.5, finetune_epochs=0)
    assert result.macs_after * 2 <= result.macs_before
    assert result.params_after < result.params_before
    assert (result.macs_after, result.params_after) == count_macs_params(result.model, (1, 1, 8, 8))
    assert "classifier" not in result.plan


def test_finetuned_pruned_model_stays_within_a_point_or_two(trained, splits):
    float_val = evaluate(trained, splits.x_val, splits.y_val)
    float_test = evaluate(trained, splits.x_test, splits.y_test)
    result = prune(trained, splits, target_mac_ratio=0.5, seed=0)
    assert result.finetune is not None
    # Measured: float 0.9775 test, pruned + fine-tuned 0.9775 test, 0.99 val both.
    assert result.finetune.val_acc >= float_val - 0.01
    assert evaluate(result.model, splits.x_test, splits.y_test) >= float_test - 0.02


def test_plan_round_trips_through_json_and_reapplies_to_a_fresh_model(trained, splits, tmp_path):
    plan = make_plan(trained, (1, *splits.input_shape), 0.5)
    path = save_plan(plan, tmp_path / "plan.json")
    assert json.loads(path.read_text()) == {"input_shape": [1, 1, 8, 8], "groups": plan}
    assert load_plan(path) == plan and load_plan(path).input_shape == (1, 1, 8, 8)
    again = apply_plan(trained, load_plan(path))
    first = apply_plan(trained, plan)
    for (ka, va), (kb, vb) in zip(first.state_dict().items(), again.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    fresh = apply_plan(make_default_model(seed=7), load_plan(path))
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in first.state_dict().items()
    }


def test_pruned_pt_is_a_plain_state_dict_that_reloads(trained, splits, tmp_path):
    result = prune(trained, splits, target_mac_ratio=0.5, finetune_epochs=1)
    path = save_pruned(result.model, tmp_path / "pruned.pt")
    state = torch.load(path, weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    reloaded = load_pruned(make_default_model(seed=11), result.plan, path)
    assert np.array_equal(predict(reloaded, splits.x_test), predict(result.model, splits.x_test))
    again = save_pruned(reloaded, tmp_path / "again" / "pruned.pt")
    assert again.read_bytes() == path.read_bytes()


def test_plans_are_deterministic_keep_top_l1_filters_and_respect_protect(trained, splits):
    plan = make_plan(trained, (1, *splits.input_shape), 0.5, criterion="l1_filter")
    assert plan == make_plan(trained, (1, *splits.input_shape), 0.5, criterion="l1_filter")
    l1 = trained.features[2].weight.detach().abs().sum(dim=(1, 2, 3))
    kept = set(plan["features.2"])
    dropped = [c for c in range(32) if c not in kept]
    assert min(l1[list(kept)]) >= max(l1[dropped])
    protected = make_plan(trained, (1, *splits.input_shape), 0.5, protect=["features.0"])
    assert "features.0" not in protected and len(protected["features.2"]) < 16
    only = make_plan(trained, (1, *splits.input_shape), ratios={"features.2": 0.5}, target_mac_ratio=None)
    assert list(only) == ["features.2"] and len(only["features.2"]) == 16


def test_pruning_keeps_at_least_one_channel_and_never_the_classifier(trained, splits):
    plan = make_plan(trained, (1, *splits.input_shape), ratios={"features.0": 0.99})
    assert len(plan["features.0"]) == 1
    with pytest.raises(ValueError, match="classifier.*model's output"):
        make_plan(trained, (1, *splits.input_shape), ratios={"classifier": 0.5})
    with pytest.raises(ValueError, match="cannot reach target_mac_ratio"):
        make_plan(trained, (1, *splits.input_shape), 0.001)


def test_apply_plan_rejects_bad_plans(trained):
    shape = (1, 1, 8, 8)
    with pytest.raises(ValueError, match="channels 0..15"):
        apply_plan(trained, {"features.0": [0, 16]}, shape)
    with pytest.raises(ValueError, match="not a channel group"):
        apply_plan(trained, {"features.1": [0]}, shape)
    with pytest.raises(ValueError, match="sorted, distinct"):
        apply_plan(trained, {"features.0": [3, 1]}, shape)
    with pytest.raises(ValueError, match="which input shape"):
        apply_plan(trained, {"features.0": [0, 1]})


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))) + x)


class ResNetish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.block = Residual()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8 * 8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)))


def test_residual_add_couples_both_branches_and_the_input_pins_them():
    model = ResNetish().eval()
    graph = analyze(model, (1, 1, 8, 8))
    # stem and block.conv2 make the same channels (they are added); block.conv1 is free.
    assert graph.groups["stem"].producers == ["stem", "block.conv2"]
    assert graph.groups["block.conv1"].prunable
    plan = make_plan(model, (1, 1, 8, 8), ratios={"stem": 0.5, "block.conv1": 0.5})
    pruned, masked = apply_plan(model, plan), mask_model(model, plan)
    assert pruned.stem.out_channels == pruned.block.conv2.out_channels == 4
    assert pruned.head[1].in_features == 4 * 8 * 8
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert (pruned(x) - masked(x)).abs().max() <= 1e-5


class AddInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.conv(x) + x, 1))


def test_channels_added_to_the_model_input_are_pinned_with_the_reason():
    graph = analyze(AddInput(), (1, 3, 4, 4))
    assert not graph.groups["conv"].prunable
    assert "model's input" in graph.groups["conv"].reason
    with pytest.raises(ValueError, match="cannot be pruned.*model's input"):
        make_plan(AddInput(), (1, 3, 4, 4), ratios={"conv": 0.5})


def test_grouped_conv_prunes_the_same_positions_in_every_group():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2), nn.ReLU(),
                          nn.Conv2d(8, 6, 1), nn.Flatten(), nn.Linear(6 * 4 * 4, 2)).eval()
    graph = analyze(model, (1, 2, 8, 8))
    # Position k of both groups is one channel: 8 outputs are 4 prunable channels.
    assert graph.groups["0"].channels == 4 and graph.groups["2"].channels == 4
    plan = make_plan(model, (1, 2, 8, 8), ratios={"0": 0.5, "2": 0.25})
    pruned = apply_plan(model, plan)
    assert (pruned[0].out_channels, pruned[2].in_channels, pruned[2].out_channels) == (4, 4, 6)
    assert pruned[2].groups == 2
    x = torch.rand(3, 2, 8, 8)
    with torch.no_grad():
        assert (pruned(x) - mask_model(model, plan)(x)).abs().max() <= 1e-5


def test_unknown_ops_between_layers_are_refused_naming_module_and_op():
    class Gate(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.erf(x)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(1, 4, 3)
            self.gate = Gate()
            self.b = nn.Conv2d(4, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.gate(self.a(x)))

    with pytest.raises(UnsupportedOpError, match=r"op 'erf' at 'erf' in module 'gate' \(Gate\)"):
        analyze(Net(), (1, 1, 8, 8))
    lstm = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    with pytest.raises(UnsupportedOpError, match=r"layer '2' is a LayerNorm"):
        analyze(lstm, (1, 1, 8, 8))


def test_flatten_idioms_are_understood():
    class ViewNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 6, 3, padding=1)
            self.fc = nn.Linear(6 * 4 * 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.max_pool2d(torch.relu(self.conv(x)), 2)
            return self.fc(x.view(x.size(0), -1))

    class ConstView(ViewNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.max_pool2d(torch.relu(self.conv(x)), 2)
            return self.fc(x.view(-1, 96))

    for model in (ViewNet().eval(), ConstView().eval()):
        assert analyze(model, (1, 1, 8, 8)).groups["conv"].consumers == [("fc", 16)]
        plan = {"conv": [1, 2, 5]}
        x = torch.rand(4, 1, 8, 8)
        with torch.no_grad():
            pruned = apply_plan(model, plan, (1, 1, 8, 8))
            assert (pruned(x) - mask_model(model, plan, (1, 1, 8, 8))(x)).abs().max() <= 1e-5


def test_unknown_ops_on_the_input_or_output_side_are_allowed():
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Conv2d(6, 8, 3),
                                      nn.Flatten(), nn.Linear(8 * 4 * 4, 5), nn.Softmax(dim=1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(torch.tanh(x * 2.0 - 1.0))

    model = Scaled().eval()
    plan = make_plan(model, (1, 1, 8, 8), 0.5)
    assert set(plan) == {"body.0", "body.2"}
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert (apply_plan(model, plan)(x) - mask_model(model, plan)(x)).abs().max() <= 1e-6


def test_count_macs_with_a_batchless_shape_says_what_it_wants():
    with pytest.raises(ValueError, match=r"including the batch dimension"):
        count_macs_params(make_default_model(), (8, 8))


@pytest.mark.parametrize("criterion", ["l1", "l2", "l1_filter", "bn_scale", "taylor", "random"])
def test_every_criterion_makes_a_valid_plan_that_reaches_the_target(criterion, splits):
    torch.manual_seed(0)
    model = _randomize_bn(BNNet())
    data = (np.random.default_rng(0).random((32, 3, 16, 16), dtype=np.float32),
            np.arange(32) % 5)
    plan = make_plan(model, (1, 3, 16, 16), 0.5, criterion=criterion, data=data)
    pruned = apply_plan(model, plan)
    assert count_macs_params(pruned, (1, 3, 16, 16))[0] <= 0.5 * count_macs_params(
        model, (1, 3, 16, 16))[0]


def test_bn_scale_keeps_the_channels_with_the_largest_gammas():
    torch.manual_seed(0)
    model = _randomize_bn(BNNet())
    plan = make_plan(model, (1, 3, 16, 16), ratios={"stem.0": 0.5}, criterion="bn_scale")
    gamma = model.stem[1].weight.detach().abs()
    assert plan["stem.0"] == sorted(torch.argsort(gamma, descending=True)[:6].tolist())


def test_taylor_needs_data_and_random_depends_on_the_seed():
    model = BNNet()
    with pytest.raises(ValueError, match="needs calibration data"):
        make_plan(model, (1, 3, 16, 16), 0.5, criterion="taylor")
    a = make_plan(model, (1, 3, 16, 16), ratios={"stem.0": 0.5}, criterion="random", seed=0)
    b = make_plan(model, (1, 3, 16, 16), ratios={"stem.0": 0.5}, criterion="random", seed=1)
    assert a != b
    with pytest.raises(ValueError, match="unknown pruning criterion 'l3'"):
        make_plan(model, (1, 3, 16, 16), 0.5, criterion="l3")


def test_global_ranking_never_empties_a_group_and_rounds_to_the_multiple():
    torch.manual_seed(0)
    model = _randomize_bn(BNNet())
    # All but one of a layer's filters are tiny: a global ranking wants them all gone.
    with torch.no_grad():
        model.body[2].weight[1:].mul_(1e-4)
    plan = make_plan(model, (1, 3, 16, 16), 0.3, ranking="global", round_to=4)
    assert len(plan["body.2"]) == 4  # the floor, rounded to the multiple
    assert all(len(k) % 4 == 0 for k in plan.values())
    local = make_plan(model, (1, 3, 16, 16), 0.3, ranking="local", round_to=4)
    assert len(local["body.2"]) > 4
    assert count_macs_params(apply_plan(model, plan), (1, 3, 16, 16))[0] <= 0.3 * \
        count_macs_params(model, (1, 3, 16, 16))[0]


def test_round_to_comes_from_the_boards_core():
    from microfit.prune import round_to_for_board, round_to_for_core

    assert round_to_for_board("qemu-mps2-an386") == 4  # Cortex-M4: DSP
    assert round_to_for_board("qemu-mps2-an385") == 1  # Cortex-M3: no SIMD
    assert round_to_for_core("cortex-m7") == 4 and round_to_for_core("avr") == 1


def test_protect_accepts_a_group_or_any_layer_of_it(trained, splits):
    shape = (1, *splits.input_shape)
    assert "features.0" not in make_plan(trained, shape, 0.6, protect=["features.0"])
    with pytest.raises(ValueError, match="not a layer of DigitsCNN that pruning cuts"):
        make_plan(trained, shape, 0.5, protect=["features.1"])


def test_prune_result_reports_channel_params_and_mac_ratios_side_by_side(trained, splits):
    res = prune(trained, splits, target_mac_ratio=0.5, finetune_epochs=0, round_to=4)
    ratios = res.ratios()
    assert set(ratios) == {"channel_ratio", "params_ratio", "mac_ratio"}
    assert ratios["mac_ratio"] <= 0.5 < ratios["channel_ratio"]
    assert res.channels_before == 16 + 32 + 10
    assert "channels" in repr(res)


def test_group_l1_counts_the_next_layers_input_weights():
    # Two filters of equal size; the next layer reads channel 1 ten times harder.
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU(), nn.Conv2d(2, 2, 1),
                          nn.Flatten(), nn.Linear(2 * 4 * 4, 2))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[2].weight.copy_(torch.tensor([[0.1, 1.0], [0.1, 1.0]]).view(2, 2, 1, 1))
    plan = make_plan(model, (1, 1, 4, 4), ratios={"0": 0.5}, criterion="l1")
    assert plan["0"] == [1]
