"""Per-group sensitivity: validation accuracy after pruning each group alone.

Which layers can lose channels cheaply is the question every pruning
decision rests on, and the answer is cheap to measure: prune one group at
one ratio, evaluate (no fine-tuning), repeat. Candidates are independent, so
they run in worker processes (``jobs``, default: the machine's cores), each
shown as one line of the progress display. The table goes to JSON and CSV,
and to a PNG plot when matplotlib is installed.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..train.data import DataSplits
from .apply import apply_plan
from .graph import analyze
from .importance import score_groups
from .macs import CostModel
from .plan import make_plan, resolve_protect

DEFAULT_RATIOS = (0.25, 0.5, 0.75)

# Worker state, set once per process by _init (the model and data travel once).
_STATE: dict[str, Any] = {}


def _init(model: nn.Module, x: np.ndarray, y: np.ndarray, shape: tuple[int, ...],
          criterion: str, seed: int, train_xy: tuple[np.ndarray, np.ndarray]) -> None:
    import torch

    torch.set_num_threads(1)
    graph = analyze(model, shape)
    _STATE.update(model=model, x=x, y=y, shape=shape, graph=graph,
                  scores=score_groups(model, graph, criterion, train_xy, seed),
                  cost=CostModel(model, graph, shape))


def _evaluate(group: str, ratio: float) -> dict[str, Any]:
    from ..train.fit import evaluate

    s = _STATE
    plan = make_plan(s["model"], s["shape"], ratios={group: ratio}, graph=s["graph"],
                     scores=s["scores"])
    net = apply_plan(s["model"], plan, graph=s["graph"])
    vec = s["graph"].keep_vector(plan)
    return {"group": group, "ratio": ratio, "kept": len(plan[group]),
            "channels": s["graph"].groups[group].channels,
            "mac_ratio": s["cost"].macs(vec) / s["cost"].macs_before,
            "val_accuracy": evaluate(net, s["x"], s["y"])}


def sensitivity(model: nn.Module, splits: DataSplits, ratios: Sequence[float] = DEFAULT_RATIOS,
                *, criterion: str = "l1", protect: Iterable[str] = (), jobs: int | None = None,
                seed: int = 0, progress: bool = True) -> list[dict[str, Any]]:
    """One row per (prunable group, ratio): kept channels, MAC ratio, validation accuracy.

    The first row per table is the unpruned baseline (group ``""``, ratio 0).
    ``jobs`` = 1 runs in this process; more use a process pool (fork on
    Linux: the model and data are inherited, not pickled per candidate).
    """
    from ..train.fit import evaluate

    shape = (1, *splits.input_shape)
    graph = analyze(model, shape)
    protected = resolve_protect(graph, protect)
    groups = [g.name for g in graph.prunable() if g.name not in protected]
    tasks = [(g, float(r)) for g in groups for r in ratios]
    base = {"group": "", "ratio": 0.0, "kept": None, "channels": None, "mac_ratio": 1.0,
            "val_accuracy": evaluate(model, splits.x_val, splits.y_val)}
    jobs = jobs or os.cpu_count() or 1
    args = (model, splits.x_val, splits.y_val, shape, criterion, seed,
            (splits.x_train, splits.y_train))
    rows: dict[tuple[str, float], dict[str, Any]] = {}
    from rich.progress import Progress

    with Progress(disable=not progress) as bar:
        ids = {t: bar.add_task(f"{t[0]} @ {t[1]:.2f}", total=1) for t in tasks}
        if jobs <= 1 or len(tasks) <= 1:
            _init(*args)
            for t in tasks:
                rows[t] = _evaluate(*t)
                bar.update(ids[t], completed=1)
        else:
            ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
            with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init,
                                     initargs=args) as pool:
                futures = {pool.submit(_evaluate, *t): t for t in tasks}
                for fut in as_completed(futures):
                    t = futures[fut]
                    rows[t] = fut.result()
                    bar.update(ids[t], completed=1)
    return [base, *(rows[t] for t in tasks)]


def save_sensitivity(rows: Sequence[dict[str, Any]], out_dir: str | Path,
                     name: str = "sensitivity") -> list[Path]:
    """Write ``name``.json, ``name``.csv and (with matplotlib) ``name``.png into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.csv"]
    paths[0].write_text(json.dumps(list(rows), indent=2) + "\n")
    with open(paths[1], "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return paths
    fig, ax = plt.subplots(figsize=(7, 4))
    for group in dict.fromkeys(r["group"] for r in rows if r["group"]):
        pts = [(r["ratio"], r["val_accuracy"]) for r in rows if r["group"] == group]
        ax.plot([0.0] + [p[0] for p in pts], [rows[0]["val_accuracy"]] + [p[1] for p in pts],
                marker="o", label=group)
    ax.set_xlabel("fraction of the group's channels removed")
    ax.set_ylabel("validation accuracy (no fine-tuning)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = out / f"{name}.png"
    fig.savefig(png, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return [*paths, png]
