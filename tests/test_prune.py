"""Structured pruning: real channel removal, equivalence with masking, MAC targets,
plans as files, and clear refusals for structures not supported yet."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
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
from torch import nn


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
    graph = analyze(model)
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
    assert json.loads(path.read_text()) == plan
    assert load_plan(path) == plan
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
    plan = make_plan(trained, (1, *splits.input_shape), 0.5)
    assert plan == make_plan(trained, (1, *splits.input_shape), 0.5)
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
    with pytest.raises(ValueError, match="channels 0..15"):
        apply_plan(trained, {"features.0": [0, 16]})
    with pytest.raises(ValueError, match="not a producer layer"):
        apply_plan(trained, {"features.1": [0]})
    with pytest.raises(ValueError, match="sorted, distinct"):
        apply_plan(trained, {"features.0": [3, 1]})


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


def test_residual_add_is_refused_naming_the_module_and_op():
    with pytest.raises(UnsupportedOpError, match=r"residual add 'add'.*module 'block' \(Residual\)"
                                                  r".*'block.conv2', 'stem'"):
        make_plan(ResNetish(), (1, 1, 8, 8), 0.5)


def test_grouped_conv_concat_and_unknown_layers_are_refused():
    grouped = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.ReLU(), nn.Flatten(),
                            nn.Linear(8 * 6 * 6, 2))
    with pytest.raises(UnsupportedOpError, match=r"layer '0' is a grouped Conv2d \(groups=2\)"):
        apply_plan(grouped, {"0": [0]})

    class Cat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(1, 4, 1)
            self.b = nn.Conv2d(1, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.a(x), self.b(x)], dim=1)

    with pytest.raises(UnsupportedOpError, match=r"merge 'cat'.*'a', 'b'"):
        analyze(Cat())
    sig = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Sigmoid(), nn.Conv2d(4, 4, 3))
    with pytest.raises(UnsupportedOpError, match=r"layer '1' is a Sigmoid"):
        analyze(sig)


def test_flatten_idioms_are_understood():
    class ViewNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 6, 3, padding=1)
            self.fc = nn.Linear(6 * 4 * 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.max_pool2d(torch.relu(self.conv(x)), 2)
            return self.fc(x.view(x.size(0), -1))

    model = ViewNet().eval()
    assert analyze(model).groups["conv"].consumers == [("fc", 16)]
    plan = {"conv": [1, 2, 5]}
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert (apply_plan(model, plan)(x) - mask_model(model, plan)(x)).abs().max() <= 1e-5


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
