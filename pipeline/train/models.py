"""The default model and loading of user model factories.

The default ``DigitsCNN`` is the demo's model: small enough to train in
seconds on two CPU cores and to fit an Arduino Uno after pruning, wide enough
that half of its MACs can go without losing accuracy (the pruning demo needs
redundancy to remove).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import ModelLoadError
from .userfunc import load_callable

ModelFactory = Callable[[], nn.Module]


class DigitsCNN(nn.Module):
    """Conv(1->16) ReLU Conv(16->32) ReLU MaxPool2 Flatten Linear(32*4*4 -> 10).

    Written as one flat nn.Sequential chain so every stage (pruning's tracer,
    the ONNX exporter, the IR) sees the plainest possible graph.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16,
                 image_size: int = 8) -> None:
        super().__init__()
        pooled = image_size // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(2 * width * pooled * pooled, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


def make_default_model(seed: int = 0) -> nn.Module:
    """A freshly initialised DigitsCNN; the same seed gives the same weights."""
    return instantiate(DigitsCNN, seed=seed)


def instantiate(factory: ModelFactory, seed: int = 0) -> nn.Module:
    """Call ``factory()`` with torch's RNG seeded, leaving the global RNG untouched.

    Layer initialisation draws from torch's global generator, so without this
    the same command would start training from different weights each run.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def load_model_factory(spec: str) -> ModelFactory:
    """Resolve ``"file.py:func"`` to a factory that checks it returns an nn.Module.

    The returned callable raises ModelLoadError naming the function when the
    user's function fails or returns something other than a torch module, so
    the mistake is reported where it was made instead of deep in pruning.
    """
    fn, where = load_callable(spec, "model factory")

    def factory() -> nn.Module:
        try:
            model = fn()
        except Exception as exc:
            raise ModelLoadError(
                f"model factory {where} raised {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(model, nn.Module):
            raise ModelLoadError(
                f"model factory {where} returned {type(model).__name__}; "
                "it must return a torch.nn.Module"
            )
        return model

    factory.__name__ = getattr(fn, "__name__", "factory")
    return factory
