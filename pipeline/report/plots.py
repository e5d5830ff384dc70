"""The report's figures, drawn with matplotlib from report.json's content only.

Each figure is skipped when the report lacks its data (no device run, no
per-layer hooks, no sweep), so a partial run folder still renders. Files go to
RUN/plots/ and their paths, relative to the run folder, into report.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLOT_DIR = "plots"


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by another (less cost, at least as much accuracy), by cost.

    Each point is (cost, accuracy); lower cost and higher accuracy are better.
    """
    front: list[tuple[float, float]] = []
    best = float("-inf")
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((cost, acc))
            best = acc
    return front


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, run_dir: Path, name: str) -> str:
    rel = f"{PLOT_DIR}/{name}.png"
    (run_dir / PLOT_DIR).mkdir(parents=True, exist_ok=True)
    fig.savefig(run_dir / rel, dpi=110, bbox_inches="tight", metadata={"Software": None})
    fig.clf()
    return rel


def _layers(plt: Any, rep: dict[str, Any], run_dir: Path) -> str | None:
    d = rep.get("device") or {}
    layers = [r for r in d.get("layers") or [] if r.get("median")]
    if not layers:
        return None
    kind = d.get("counter_kind", "counter")
    names = [f"{r['index']}: {r.get('op') or ''} {r['name']}".strip() for r in layers]
    values = [r["median"] for r in layers]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(layers) + 1.2))
    ax.barh(range(len(layers)), values, color="#3b75af")
    ax.set_yticks(range(len(layers)), names)
    ax.invert_yaxis()
    ax.set_xlabel(f"{kind} per inference (median)")
    ax.set_title(f"Per-layer latency on {d.get('board')}")
    for i, r in enumerate(layers):
        if r.get("share") is not None:
            ax.text(values[i], i, f" {100 * r['share']:.1f}%", va="center", fontsize=8)
    return _save(fig, run_dir, "layers")


def _stages(plt: Any, rep: dict[str, Any], run_dir: Path) -> str | None:
    stages = [s for s in rep.get("stages") or [] if s.get("accuracy") is not None]
    if not stages:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for st in stages:
        size = st.get("flash") or st.get("weight_bytes")
        if size:
            left.scatter(size / 1024, 100 * st["accuracy"], s=40)
            left.annotate(st["stage"], (size / 1024, 100 * st["accuracy"]), fontsize=8,
                          xytext=(4, 4), textcoords="offset points")
        if st.get("macs"):
            right.scatter(st["macs"], 100 * st["accuracy"], s=40)
            label = st["stage"]
            if st.get("latency"):
                kind = (rep.get("device") or {}).get("counter_kind", "")
                label += f"\n{st['latency']:,.0f} {kind}"
            right.annotate(label, (st["macs"], 100 * st["accuracy"]), fontsize=8,
                           xytext=(4, 4), textcoords="offset points")
    left.set_xlabel("weights in KB (device: whole firmware flash)")
    left.set_ylabel("test accuracy (%)")
    left.set_title("Accuracy vs size")
    right.set_xlabel("MACs per inference")
    right.set_title("Accuracy vs work (device: measured latency)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return _save(fig, run_dir, "stages")


def _confusion(plt: Any, rep: dict[str, Any], run_dir: Path) -> str | None:
    matrix = (rep.get("device") or {}).get("confusion")
    if not matrix:
        return None
    n = len(matrix)
    fig, ax = plt.subplots(figsize=(0.5 * n + 2, 0.5 * n + 1.6))
    ax.imshow(matrix, cmap="Blues")
    top = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                        color="white" if v > top / 2 else "black")
    ax.set_xlabel("device's top-1")
    ax.set_ylabel("true class")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_title("Confusion matrix on the device")
    return _save(fig, run_dir, "confusion")


def _pareto(plt: Any, rep: dict[str, Any], run_dir: Path) -> str | None:
    points = [p for p in rep.get("sweep") or [] if p.get("accuracy") is not None and p.get("macs")]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([p["macs"] for p in points], [100 * p["accuracy"] for p in points], s=30,
               color="#999999", label="sweep point")
    front = pareto_front([(p["macs"], p["accuracy"]) for p in points])
    ax.plot([c for c, _ in front], [100 * a for _, a in front], "o-", color="#c0392b",
            label="Pareto front")
    for p in points:
        if p.get("label"):
            ax.annotate(str(p["label"]), (p["macs"], 100 * p["accuracy"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("MACs per inference")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Pruning sweep")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, run_dir, "pareto")


def render_plots(rep: dict[str, Any], run_dir: Path) -> dict[str, str]:
    """Draw every figure the report has data for; returns {name: path relative to run_dir}."""
    plt = _pyplot()
    out: dict[str, str] = {}
    try:
        for name, fn in (("layers", _layers), ("stages", _stages), ("confusion", _confusion),
                         ("pareto", _pareto)):
            path = fn(plt, rep, Path(run_dir))
            if path is not None:
                out[name] = path
    finally:
        plt.close("all")
    return out
