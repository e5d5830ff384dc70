"""Validation of a pruned model beyond one accuracy number.

Pruning can cost a few classes far more than the average shows (a digit
whose strokes relied on the removed filters), so the prune stage reports
per-class accuracy before and after, and the test samples whose predicted
class changed, in both directions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from ..train.fit import predict


def compare_predictions(before: nn.Module, after: nn.Module, x: np.ndarray, y: np.ndarray,
                        class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Per-class accuracy of both models and every sample whose prediction changed.

    Returns ``{"per_class": [...], "changed_predictions": [...], "changed_count",
    "fixed_count", "broken_count", "worst_class"}``: ``per_class`` rows hold
    ``class, name, samples, accuracy_before, accuracy_after, delta``; a
    changed prediction is ``index, label, before, after``; "broken" means
    right before and wrong after, "fixed" the reverse. ``worst_class`` is the
    class that lost the most accuracy (None if none lost any).
    """
    y = np.asarray(y)
    pa = predict(before, x).argmax(1)
    pb = predict(after, x).argmax(1)
    classes = int(max(y.max(initial=0), pa.max(initial=0), pb.max(initial=0))) + 1
    if class_names is not None:
        classes = max(classes, len(class_names))
    names = list(class_names or []) + [str(i) for i in range(len(class_names or []), classes)]
    per_class = []
    for c in range(classes):
        sel = y == c
        n = int(sel.sum())
        acc_a = float((pa[sel] == c).mean()) if n else None
        acc_b = float((pb[sel] == c).mean()) if n else None
        per_class.append({
            "class": c, "name": names[c], "samples": n,
            "accuracy_before": acc_a, "accuracy_after": acc_b,
            "delta": None if acc_a is None or acc_b is None else acc_b - acc_a,
        })
    changed = np.nonzero(pa != pb)[0]
    rows = [{"index": int(i), "label": int(y[i]), "before": int(pa[i]), "after": int(pb[i])}
            for i in changed]
    losses = [r for r in per_class if r["delta"] is not None and r["delta"] < 0]
    worst = min(losses, key=lambda r: r["delta"])["name"] if losses else None
    return {
        "per_class": per_class,
        "changed_predictions": rows,
        "changed_count": len(rows),
        "broken_count": int(sum(r["before"] == r["label"] != r["after"] for r in rows)),
        "fixed_count": int(sum(r["after"] == r["label"] != r["before"] for r in rows)),
        "worst_class": worst,
    }
