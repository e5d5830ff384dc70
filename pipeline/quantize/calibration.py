"""Activation range calibration: which float range each int8 tensor covers.

Every method watches the float graph's activation tensors (after their fused
activation) on calibration samples from the training split and returns one
``(lo, hi)`` per tensor; :func:`~microfit.quantize.quantize.activation_qparams`
turns that into a scale and zero point.

``minmax``
    The extremes seen. Nothing is clipped, so one outlier sample can stretch
    the scale for every other value.
``moving_average``
    The extremes of each mini-batch, averaged exponentially across batches
    (``momentum``), as TensorFlow's quantization-aware training tracks ranges:
    a rare extreme moves the range a little instead of all the way.
``percentile``
    The ``percentile``-th and ``(100 - percentile)``-th percentiles of all
    values (from a fine histogram): the rarest values are clipped.
``mse``
    Per tensor, the range (each end of the min/max range shrunk by a factor
    searched on a grid) whose int8 quantization has the smallest mean squared
    error over the observed values' histogram: it trades clipping error
    against rounding error.

Histograms have ``bins`` bins over the min/max range (a first pass finds it),
so memory stays at one histogram per tensor however large the calibration set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import QuantizationError

CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "moving_average", "percentile", "mse")


@dataclass
class CalibrationOptions:
    """Knobs of the calibration methods (defaults are the usual choices)."""

    percentile: float = 99.99
    momentum: float = 0.9
    moving_average_batch: int = 32
    bins: int = 2048
    mse_grid: int = 64
    mse_min_fraction: float = 0.02

    def check(self) -> None:
        if not 50.0 < self.percentile <= 100.0:
            raise QuantizationError(f"percentile must be in (50, 100], got {self.percentile}")
        if not 0.0 <= self.momentum < 1.0:
            raise QuantizationError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.bins < 16 or self.mse_grid < 2 or self.moving_average_batch < 1:
            raise QuantizationError("bins >= 16, mse_grid >= 2 and moving_average_batch >= 1")
        if not 0.0 < self.mse_min_fraction <= 1.0:
            raise QuantizationError("mse_min_fraction must be in (0, 1]")


Activations = Callable[[int], Iterator[dict[str, np.ndarray]]]


def _minmax(batches: Iterator[dict[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
    ranges: dict[str, tuple[float, float]] = {}
    for values in batches:
        for name, v in values.items():
            lo, hi = float(np.min(v)), float(np.max(v))
            if name in ranges:
                lo, hi = min(lo, ranges[name][0]), max(hi, ranges[name][1])
            ranges[name] = (lo, hi)
    return ranges


def _moving_average(batches: Iterator[dict[str, np.ndarray]],
                    momentum: float) -> dict[str, tuple[float, float]]:
    ranges: dict[str, tuple[float, float]] = {}
    for values in batches:
        for name, v in values.items():
            lo, hi = float(np.min(v)), float(np.max(v))
            if name in ranges:
                plo, phi = ranges[name]
                lo = momentum * plo + (1.0 - momentum) * lo
                hi = momentum * phi + (1.0 - momentum) * hi
            ranges[name] = (lo, hi)
    return ranges


@dataclass
class Histogram:
    """Counts of one tensor's values in ``len(counts)`` equal bins over [lo, hi]."""

    lo: float
    hi: float
    counts: np.ndarray

    @property
    def centers(self) -> np.ndarray:
        edges = np.linspace(self.lo, self.hi, len(self.counts) + 1)
        return (edges[:-1] + edges[1:]) / 2

    def quantile(self, q: float) -> float:
        """Value below which a fraction ``q`` of the samples lie (linear within a bin)."""
        cum = np.cumsum(self.counts, dtype=np.float64)
        total = cum[-1]
        if total == 0 or self.hi <= self.lo:
            return self.lo
        target = q * total
        i = int(np.searchsorted(cum, target, side="left"))
        i = min(i, len(cum) - 1)
        before = cum[i - 1] if i > 0 else 0.0
        inside = (target - before) / max(self.counts[i], 1)
        width = (self.hi - self.lo) / len(self.counts)
        return float(self.lo + (i + min(max(inside, 0.0), 1.0)) * width)


def histograms(activations: Activations, ranges: dict[str, tuple[float, float]],
               bins: int) -> dict[str, Histogram]:
    hists = {n: Histogram(lo, hi, np.zeros(bins, np.int64)) for n, (lo, hi) in ranges.items()}
    for values in activations(0):
        for name, v in values.items():
            h = hists[name]
            if h.hi > h.lo:
                c, _ = np.histogram(v, bins=bins, range=(h.lo, h.hi))
                h.counts += c
            else:
                h.counts[0] += v.size
    return hists


def quantization_mse(h: Histogram, lo: float, hi: float) -> float:
    """Mean squared error of int8 affine quantization over [lo, hi] of the histogram's values."""
    from .quantize import activation_qparams

    qp = activation_qparams(lo, hi)
    s, zp = float(qp.scale[0]), int(qp.zero_point[0])
    c = h.centers
    q = np.clip(np.floor(c / s + 0.5) + zp, -128, 127)
    err = (q - zp) * s - c
    total = h.counts.sum()
    return float((h.counts * err * err).sum() / max(total, 1))


def mse_range(h: Histogram, grid: int, min_fraction: float) -> tuple[float, float]:
    """The shrunk min/max range with the smallest quantization MSE (ties: the widest).

    Each end shrinks on its own (an outlier is usually on one side): the upper
    end is searched with the lower fixed, then the lower with the best upper,
    twice, over factors from 1 down to ``min_fraction`` (geometric grid).
    """
    factors = np.geomspace(1.0, min_fraction, grid)[1:]
    lo, hi = h.lo, h.hi
    best_err = quantization_mse(h, lo, hi)
    for _ in range(2):
        for f in factors:
            if h.hi > 0 and (err := quantization_mse(h, lo, h.hi * f)) < best_err:
                hi, best_err = h.hi * f, err
        for f in factors:
            if h.lo < 0 and (err := quantization_mse(h, h.lo * f, hi)) < best_err:
                lo, best_err = h.lo * f, err
    return lo, hi


def calibrate_ranges(activations: Activations, method: str,
                     options: CalibrationOptions | None = None) -> dict[str, tuple[float, float]]:
    """``(lo, hi)`` per activation tensor with ``method``.

    ``activations(batch_size)`` yields dicts of float activations per batch
    (0: the caller's default batch size); it may be called more than once.
    """
    opts = options or CalibrationOptions()
    opts.check()
    if method not in CALIBRATION_METHODS:
        raise QuantizationError(f"calibration method {method!r} is not available; use one of "
                                f"{CALIBRATION_METHODS}")
    if method == "minmax":
        return _minmax(activations(0))
    if method == "moving_average":
        return _moving_average(activations(opts.moving_average_batch), opts.momentum)
    full = _minmax(activations(0))
    hists = histograms(activations, full, opts.bins)
    if method == "percentile":
        p = opts.percentile / 100.0
        # activation_qparams widens each range to include 0 afterwards.
        return {n: (h.quantile(1.0 - p), h.quantile(p)) for n, h in hists.items()}
    return {n: mse_range(h, opts.mse_grid, opts.mse_min_fraction) for n, h in hists.items()}
