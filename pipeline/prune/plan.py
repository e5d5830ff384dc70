"""Which channels to keep: the pruning plan and the searches that make it.

A plan maps each pruned channel group (named by its first producer layer,
e.g. ``"features.0"``) to the sorted indices of the channels it keeps, and
remembers the input shape it was made for. It says nothing about how to
cut; apply.py does that, so a plan made here, edited by hand, or made by
another tool all apply the same way, and a plan saved in a run folder
rebuilds the pruned architecture from a fresh model.

Two ways to decide how many channels go:

- local: one removal fraction for every unprotected group (found by
  bisection for a MAC target), channels ranked within each group;
- global: channels of all groups ranked together (scores normalised per
  group) and removed from the bottom until the MAC target is met; no group
  ever drops below one channel (or ``round_to``), and groups that stop at
  that floor are listed in the result instead of being skipped silently.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ModelLoadError, RunFolderError
from .graph import ChannelGroup, DependencyGraph, analyze
from .importance import Scores, score_groups
from .macs import CostModel

DEFAULT_TARGET_MAC_RATIO = 0.5
RANKINGS = ("local", "global")
_SEARCH_STEPS = 1000
DSP_CORES = ("cortex-m4", "cortex-m7")


class Plan(dict[str, list[int]]):
    """``{group: kept channel indices}`` plus the ``input_shape`` it was made for."""

    def __init__(self, groups: Mapping[str, Sequence[int]] | None = None,
                 input_shape: Sequence[int] | None = None) -> None:
        super().__init__({k: [int(i) for i in v] for k, v in (groups or {}).items()})
        self.input_shape = tuple(int(d) for d in input_shape) if input_shape else None

    def kept_counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.items()}

    def __repr__(self) -> str:
        kept = ", ".join(f"{k}: {len(v)}" for k, v in self.items())
        return f"Plan({{{kept}}}, input_shape={self.input_shape})"


def plan_input_shape(plan: Mapping[str, Sequence[int]],
                     input_shape: Sequence[int] | None) -> tuple[int, ...]:
    shape = input_shape if input_shape is not None else getattr(plan, "input_shape", None)
    if shape is None:
        raise ValueError("the plan does not say which input shape it was made for; pass "
                         "input_shape=(1, *splits.input_shape)")
    return tuple(int(d) for d in shape)


def round_to_for_core(core: str) -> int:
    """Channel multiple that suits a core's kernels: 4 where SIMD MACs work in fours.

    The Cortex-M4/M7 DSP kernels process 4 channels per step (SMLAD on
    pairs, loops unrolled by 4); an odd width falls to the scalar tail loop
    and loses more time than its MACs save.
    """
    return 4 if core.lower().startswith(DSP_CORES) else 1


def round_to_for_board(board: str | None) -> int:
    """``round_to_for_core`` of a board in targets/ (1 when no board is given)."""
    if not board:
        return 1
    from ..target.boards import load_board

    return round_to_for_core(load_board(board).core)


def keep_count(channels: int, prune_ratio: float, round_to: int = 1, floor: int = 1) -> int:
    """Channels left after removing ``prune_ratio`` of ``channels``.

    Rounds the kept count up (to a multiple of ``round_to`` when asked, which
    SIMD kernels like) and never goes below ``floor`` (at least one) or above
    all of them.
    """
    keep = max(floor, 1, math.ceil(channels * (1.0 - prune_ratio) - 1e-9))
    if round_to > 1:
        keep = math.ceil(keep / round_to) * round_to
    return min(channels, keep)


def _input_shape(example_input: torch.Tensor | Sequence[int]) -> tuple[int, ...]:
    if isinstance(example_input, torch.Tensor):
        return tuple(example_input.shape)
    return tuple(int(d) for d in example_input)


def resolve_protect(graph: DependencyGraph, protect: Iterable[str]) -> set[str]:
    """Group names for ``protect``, which may name groups or any layer cut with one."""
    out: set[str] = set()
    for name in protect:
        if name in graph.groups:
            out.add(name)
            continue
        hits = [g.name for g in graph.groups.values() if name in g.members]
        if not hits:
            raise ValueError(
                f"protect names {name!r}, which is not a layer of {graph.model_name} that "
                f"pruning cuts; groups: {', '.join(graph.groups)}"
            )
        out.update(hits)
    return out


def _select(group: ChannelGroup, scores: np.ndarray, keep: int) -> list[int]:
    """The pinned channels plus the best-scoring others, ``keep`` in all (ties: lower index)."""
    keep = max(keep, len(group.pinned))
    pinned = set(group.pinned)
    order = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in pinned]
    return sorted([*pinned, *order[: keep - len(pinned)]])


def _plan_from_counts(graph: DependencyGraph, scores: Scores, counts: Mapping[str, int]) -> Plan:
    return Plan({name: _select(graph.groups[name], scores[name], k) for name, k in counts.items()},
                graph.input_shape)


def make_plan(
    model: nn.Module,
    example_input: torch.Tensor | Sequence[int],
    target_mac_ratio: float | None = None,
    *,
    ratios: Mapping[str, float] | None = None,
    criterion: str = "l1",
    protect: Iterable[str] = (),
    round_to: int = 1,
    ranking: str = "local",
    data: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
    graph: DependencyGraph | None = None,
    scores: Scores | None = None,
) -> Plan:
    """Choose the channels to keep in every prunable group of ``model``.

    ``example_input`` is an input batch (e.g. a ``[1, C, H, W]`` tensor) or
    its shape; it sets the spatial sizes the MAC count depends on.

    Either ``target_mac_ratio`` (MACs after / MACs before; default 0.5) or
    ``ratios`` ({group or layer: fraction of its channels to remove}) decides
    how many channels go. ``ranking`` "local" searches one removal fraction
    for all unprotected groups; "global" ranks all channels together (see
    the module docstring). ``protect`` names groups (or layers of them) to
    leave whole; channels that reach the model output or come from its input
    are never pruned. ``criterion`` ranks channels (``data`` = calibration
    ``(x, y)`` for "taylor"); the highest scores stay, ties keep the lower
    index, so plans are deterministic. Kept counts are rounded up to a
    multiple of ``round_to``.
    """
    if round_to < 1:
        raise ValueError(f"round_to must be >= 1, got {round_to}")
    if ranking not in RANKINGS:
        raise ValueError(f"ranking must be one of {RANKINGS}, got {ranking!r}")
    if ratios is not None and target_mac_ratio is not None:
        raise ValueError("give either target_mac_ratio or ratios, not both")
    shape = _input_shape(example_input)
    graph = graph or analyze(model, shape)
    protected = resolve_protect(graph, protect)
    candidates = [g for g in graph.prunable() if g.name not in protected]
    scores = scores if scores is not None else score_groups(model, graph, criterion, data, seed)

    if ratios is not None:
        counts: dict[str, int] = {}
        for name, ratio in ratios.items():
            group = graph.groups.get(name) or graph.group_of(name)
            if group is None or not group.prunable or group.name in protected:
                why = "it is protected" if group is not None and group.name in protected else (
                    group.reason if group is not None else "it is not a layer pruning can cut")
                raise ValueError(
                    f"ratios names {name!r}, which cannot be pruned: {why}; prunable: "
                    f"{', '.join(g.name for g in candidates) or 'none'}"
                )
            if not 0.0 <= ratio < 1.0:
                raise ValueError(f"ratio for {name!r} must be in [0, 1), got {ratio}")
            counts[group.name] = keep_count(group.channels, ratio, round_to, len(group.pinned))
        return _plan_from_counts(graph, scores, counts)

    target = DEFAULT_TARGET_MAC_RATIO if target_mac_ratio is None else float(target_mac_ratio)
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target_mac_ratio must be in (0, 1], got {target}")
    cost = CostModel(model, graph, (1, *shape[1:]))
    if ranking == "local":
        counts = _search_uniform(graph, cost, scores, candidates, target, round_to)
        return _plan_from_counts(graph, scores, counts)
    return _search_global(graph, cost, scores, candidates, target, round_to)


def _unreachable(graph: DependencyGraph, target: float, best: float, round_to: int) -> ValueError:
    return ValueError(
        f"cannot reach target_mac_ratio={target} for {graph.model_name}: with every prunable "
        f"group cut to {max(1, round_to)} channel(s) MACs are still {best:.3f} of the original; "
        "raise the target, unprotect layers, or lower round_to"
    )


def _bisect(n: int, fits) -> int:
    """Smallest k in [0, n] with fits(k), given fits is monotone; n + 1 if none."""
    if not fits(n):
        return n + 1
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _search_uniform(graph: DependencyGraph, cost: CostModel, scores: Scores,
                    candidates: list[ChannelGroup], target: float, round_to: int
                    ) -> dict[str, int]:
    """Smallest single removal fraction over ``candidates`` with MACs <= target * before."""
    total = cost.macs_before
    if not candidates:
        if target >= 1.0:
            return {}
        raise ValueError(
            f"{graph.model_name} has no prunable layers (all protected, pinned or feeding the "
            f"output); cannot reach target_mac_ratio={target}"
        )

    def counts(step: int) -> dict[str, int]:
        p = step / _SEARCH_STEPS
        return {g.name: keep_count(g.channels, p, round_to, len(g.pinned)) for g in candidates}

    def fits(step: int) -> bool:
        vec = graph.keep_vector(_plan_from_counts(graph, scores, counts(step)))
        return cost.macs(vec) <= target * total

    step = _bisect(_SEARCH_STEPS, fits)
    if step > _SEARCH_STEPS:
        vec = graph.keep_vector(_plan_from_counts(graph, scores, counts(_SEARCH_STEPS)))
        raise _unreachable(graph, target, cost.macs(vec) / total, round_to)
    return counts(step)


def normalized(scores: Scores, graph: DependencyGraph) -> Scores:
    """Scores divided by each group's mean over its unpinned channels (comparable across groups)."""
    out = {}
    for name, s in scores.items():
        g = graph.groups[name]
        free = np.setdiff1d(np.arange(g.channels), g.pinned)
        mean = float(np.mean(s[free])) if len(free) else 0.0
        out[name] = s / mean if mean > 0 else s.astype(np.float64)
    return out


def _search_global(graph: DependencyGraph, cost: CostModel, scores: Scores,
                   candidates: list[ChannelGroup], target: float, round_to: int) -> Plan:
    """Remove the globally lowest-ranked channels until the MAC target is met."""
    total = cost.macs_before
    norm = normalized(scores, graph)
    entries = sorted(
        ((float(norm[g.name][i]), order, int(i)) for order, g in enumerate(candidates)
         for i in np.setdiff1d(np.arange(g.channels), g.pinned)),
    )
    floors = {g.name: max(1, len(g.pinned)) for g in candidates}

    def counts(n: int) -> dict[str, int]:
        left = {g.name: g.channels for g in candidates}
        removed = 0
        for _, order, _ in entries:
            if removed >= n:
                break
            name = candidates[order].name
            if left[name] > floors[name]:
                left[name] -= 1
                removed += 1
        return {g.name: min(g.channels, math.ceil(left[g.name] / round_to) * round_to)
                for g in candidates}

    def plan_for(n: int) -> Plan:
        # Within a group, the global order and the group's own order agree
        # (normalising is a per-group scale), so keep-top-k is the same set.
        return _plan_from_counts(graph, scores, counts(n))

    def fits(n: int) -> bool:
        return cost.macs(graph.keep_vector(plan_for(n))) <= target * total

    if not candidates:
        if target >= 1.0:
            return Plan({}, graph.input_shape)
        raise ValueError(
            f"{graph.model_name} has no prunable layers; cannot reach target_mac_ratio={target}")
    n = _bisect(len(entries), fits)
    if n > len(entries):
        raise _unreachable(graph, target,
                           cost.macs(graph.keep_vector(plan_for(len(entries)))) / total, round_to)
    return plan_for(n)


def floor_groups(plan: Mapping[str, Sequence[int]], graph: DependencyGraph,
                 round_to: int = 1) -> list[str]:
    """Groups a plan cut to their minimum (what a global ranking would like to empty)."""
    return [name for name, kept in plan.items()
            if len(kept) <= max(round_to, 1, len(graph.groups[name].pinned))
            and graph.groups[name].channels > len(kept)]


def validate_plan(plan: Mapping[str, Sequence[int]], graph: DependencyGraph) -> None:
    """Raise ValueError if ``plan`` does not fit ``graph`` (unknown or unprunable
    group, unsorted/duplicate/out-of-range indices, a pinned channel dropped,
    or no channel kept)."""
    for name, kept in plan.items():
        group = graph.groups.get(name)
        if group is None:
            raise ValueError(
                f"plan names {name!r}, which is not a channel group of {graph.model_name}; "
                f"groups: {', '.join(graph.groups)}"
            )
        kept = list(kept)
        if not group.prunable and len(kept) < group.channels:
            raise ValueError(f"plan prunes {name!r}, which cannot be pruned: {group.reason}")
        if not kept:
            raise ValueError(f"plan keeps no channel of {name!r}; keep at least one")
        if any(not isinstance(i, (int, np.integer)) or isinstance(i, bool) for i in kept):
            raise ValueError(f"plan for {name!r} must list integer channel indices")
        if kept != sorted(set(kept)):
            raise ValueError(f"plan for {name!r} must list sorted, distinct channel indices")
        if kept[0] < 0 or kept[-1] >= group.channels:
            raise ValueError(
                f"plan for {name!r} keeps channel {kept[-1] if kept[0] >= 0 else kept[0]}, "
                f"but the group has channels 0..{group.channels - 1}"
            )
        missing = sorted(set(group.pinned) - set(kept))
        if missing:
            raise ValueError(
                f"plan for {name!r} drops channels {missing}, which must stay: "
                f"{'; '.join(group.pin_reasons)}"
            )


def compose_plans(first: Mapping[str, Sequence[int]], second: Mapping[str, Sequence[int]]
                  ) -> Plan:
    """The plan of pruning by ``first`` and then the result by ``second``.

    ``second``'s indices count the channels ``first`` kept, in order, which is
    how the pruned model numbers them, so iterative schedules can always
    express their result as one plan on the original model.
    """
    out = {k: list(v) for k, v in first.items()}
    for name, kept in second.items():
        base = out.get(name)
        out[name] = [int(i) for i in kept] if base is None else [base[i] for i in kept]
    shape = getattr(first, "input_shape", None) or getattr(second, "input_shape", None)
    return Plan(out, shape)


def save_plan(plan: Mapping[str, Sequence[int]], path: str | Path,
              input_shape: Sequence[int] | None = None) -> Path:
    """Write the plan as JSON, one group per line (readable diffs, stable bytes)."""
    path = Path(path)
    shape = input_shape if input_shape is not None else getattr(plan, "input_shape", None)
    lines = [f"    {json.dumps(name)}: {json.dumps([int(i) for i in kept])}"
             for name, kept in plan.items()]
    groups = "{\n" + ",\n".join(lines) + "\n  }" if lines else "{}"
    shape_txt = json.dumps([int(d) for d in shape]) if shape is not None else "null"
    body = f'{{\n  "input_shape": {shape_txt},\n  "groups": {groups}\n}}\n'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")
    return path


def load_plan(path: str | Path) -> Plan:
    """Read a plan written by save_plan (or by hand); checks its shape, not the model.

    A bare ``{group: indices}`` object (the first format) loads too, without
    an input shape.
    """
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"pruning plan '{path}' does not exist; run the prune stage first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"pruning plan '{path}' is not valid JSON: {exc}") from exc
    shape = None
    if isinstance(data, dict) and "groups" in data:
        shape = data.get("input_shape")
        data = data["groups"]
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, list)
        and all(isinstance(i, int) and not isinstance(i, bool) for i in v)
        for k, v in data.items()
    ) or not (shape is None or (isinstance(shape, list) and all(isinstance(d, int) for d in shape))):
        raise ModelLoadError(
            f"pruning plan '{path}' must be a JSON object with \"input_shape\" and \"groups\" "
            "(layer name -> list of channel indices)"
        )
    return Plan(data, shape)
