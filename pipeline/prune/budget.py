"""Budget-driven pruning: the least pruning that fits the board, with the best accuracy.

The budget is the board's flash and RAM (targets/*.toml) minus what the
firmware needs besides the model, and optionally a MAC budget. A candidate
plan is sized by the real path, not a formula: export to ONNX, import into
the IR, quantize to int8, and generate C; the code generator's weight bytes
and memory plan's arena are what the firmware will hold. The firmware's own
share is measured once by building it for the board (flash - weights, RAM -
arena of that build); without the board's toolchain it falls back to the
board file's ``[firmware]`` numbers or a documented estimate, and the result
says which.

Search: model size falls as the MAC target falls, so for each ranking
(local, global) a bisection over the MAC ratio finds the largest model that
fits; the candidates are fine-tuned briefly and the best validation accuracy
wins. If even the smallest plan (every group at its floor) does not fit, the
error gives that size and the budget.

``fit_by`` chooses what may shrink the model: "channels" (the above, the
default), "sparsity" (no channel pruning: the smallest weight sparsity whose
compressed storage, sized by ``generate(sparse="auto")``, fits the flash),
or "both" (channel-only, and channel pruning to the RAM/MAC budget with
sparsity filling the flash gap, and one plan in between; the best
validation accuracy wins). Sparsity saves flash, never RAM: the arena is
the same dense or sparse, so RAM must come from channels (docs/sparsity.md).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..errors import FitError, MicrofitError, ToolchainMissingError
from ..train.data import DataSplits
from .apply import apply_plan
from .graph import DependencyGraph, analyze
from .macs import CostModel
from .plan import Plan, make_plan, round_to_for_board

# What the firmware needs besides the model when it cannot be built here
# (bytes): serial protocol, startup, kernels' code, stack. Measured on the
# mps2 builds of the default model; AVR from the Arduino sketch's own budget.
FIRMWARE_ESTIMATES = {
    "cortex-m": {"flash": 12 * 1024, "ram": 2 * 1024},
    "avr": {"flash": 8 * 1024, "ram": 768},
}
_BISECT_STEPS = 5
_MIN_RATIO = 0.005
FIT_BY = ("channels", "sparsity", "both")
FIT_SPARSITY_PATTERNS = ("unstructured", "block")
MAX_FIT_SPARSITY = 0.95
_SPARSITY_STEPS = 7  # bisection over [0, 0.95]: 0.7% resolution


@dataclass
class Budget:
    """Bytes the model may use and an optional MAC limit; ``source`` says where they came from."""

    flash_bytes: int
    ram_bytes: int
    macs: int | None = None
    board: str | None = None
    firmware_flash: int = 0
    firmware_ram: int = 0
    source: str = "given"

    def fits(self, size: ModelSize) -> bool:
        return (size.flash <= self.flash_bytes and size.ram <= self.ram_bytes
                and (self.macs is None or size.macs <= self.macs))

    def describe(self, size: ModelSize | None = None) -> str:
        parts = [f"flash {self.flash_bytes:,} B", f"RAM {self.ram_bytes:,} B"]
        if self.macs is not None:
            parts.append(f"{self.macs:,} MACs")
        where = f" on {self.board}" if self.board else ""
        text = "budget for the model" + where + ": " + ", ".join(parts)
        if self.board:
            text += (f" (board minus the firmware's own {self.firmware_flash:,} B flash and "
                     f"{self.firmware_ram:,} B RAM, {self.source})")
        if size is not None:
            text += f"; model needs flash {size.flash:,} B, RAM {size.ram:,} B, {size.macs:,} MACs"
        return text


@dataclass
class ModelSize:
    """What the generated model needs: flash = weights, RAM = arena, from the codegen."""

    flash: int
    ram: int
    macs: int
    params: int = 0


@dataclass
class FitResult:
    """The chosen plan, its size, and every candidate the search looked at."""

    plan: Plan
    target_mac_ratio: float
    ranking: str
    size: ModelSize
    budget: Budget
    val_accuracy: float | None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    weight_sparsity: float = 0.0
    sparsity_pattern: str | None = None
    fit_by: str = "channels"

    def to_json(self) -> dict[str, Any]:
        return {
            "board": self.budget.board, "ranking": self.ranking,
            "fit_by": self.fit_by, "weight_sparsity": self.weight_sparsity,
            "sparsity_pattern": self.sparsity_pattern,
            "target_mac_ratio": self.target_mac_ratio,
            "budget": {"flash_bytes": self.budget.flash_bytes, "ram_bytes": self.budget.ram_bytes,
                       "macs": self.budget.macs, "firmware_flash": self.budget.firmware_flash,
                       "firmware_ram": self.budget.firmware_ram, "source": self.budget.source},
            "model": {"flash_bytes": self.size.flash, "ram_bytes": self.size.ram,
                      "macs": self.size.macs},
            "val_accuracy": self.val_accuracy,
            "candidates": self.candidates,
        }


def size_model(model: nn.Module, input_shape: Sequence[int], calib_x: np.ndarray,
               board_name: str = "host", work_dir: str | Path | None = None) -> ModelSize:
    """Flash (weight bytes) and RAM (arena) of ``model`` as the code generator emits it."""
    from ..codegen.generate import generate
    from ..export.onnx_export import export_onnx
    from ..ir.onnx_import import import_onnx, nchw_to_ir
    from ..quantize.quantize import quantize
    from .macs import count_macs_params

    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        export_onnx(model, input_shape, onnx_path, num_checks=1)
        qgraph = quantize(import_onnx(onnx_path), nchw_to_ir(calib_x))
        gen = generate(qgraph, Path(tmp) / "generated", board_name=board_name)
    macs, params = count_macs_params(model, input_shape)
    return ModelSize(flash=int(gen.weight_bytes), ram=int(gen.plan.arena_size), macs=macs,
                     params=params)


def firmware_overhead(board_name: str, model: nn.Module, input_shape: Sequence[int],
                      calib_x: np.ndarray) -> tuple[int, int, str]:
    """(flash, RAM, how) the firmware needs besides the model's weights and arena.

    Measured by building ``model`` (a small one, so it links) for the board:
    flash - weight bytes, RAM - arena. Falls back to the board file's
    ``[firmware] flash_bytes / ram_bytes`` or the family estimate when the
    toolchain is missing or the build does not link.
    """
    from ..codegen.generate import generate
    from ..export.onnx_export import export_onnx
    from ..ir.onnx_import import import_onnx, nchw_to_ir
    from ..quantize.quantize import quantize
    from ..target.boards import load_board
    from ..target.project import render_project
    from ..toolchain.firmware import build_firmware

    board = load_board(board_name)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = Path(tmp) / "model.onnx"
            export_onnx(model, input_shape, onnx_path, num_checks=1)
            qgraph = quantize(import_onnx(onnx_path), nchw_to_ir(calib_x))
            gen = generate(qgraph, Path(tmp) / "generated", board_name=board.name)
            project = render_project(board, Path(tmp) / "generated", Path(tmp) / "firmware")
            res = build_firmware(project, board)
            arena = res.arena_bytes if res.arena_bytes is not None else gen.plan.arena_size
            return (max(0, res.flash_bytes - gen.weight_bytes), max(0, res.ram_bytes - arena),
                    f"measured from a build for {board.name}")
    except (ToolchainMissingError, FitError, MicrofitError, OSError) as exc:
        why = type(exc).__name__
    raw = dict(board.raw.get("firmware", {}))
    if "flash_bytes" in raw and "ram_bytes" in raw:
        return int(raw["flash_bytes"]), int(raw["ram_bytes"]), f"from the board file ({why})"
    est = FIRMWARE_ESTIMATES.get(board.family, FIRMWARE_ESTIMATES["cortex-m"])
    ram = est["ram"] + (board.stack_size if board.family != "avr" else 0)
    return est["flash"], ram, f"estimated for {board.family} ({why})"


def board_budget(board_name: str, model: nn.Module, input_shape: Sequence[int],
                 calib_x: np.ndarray, macs: int | None = None) -> Budget:
    """The board's flash and RAM minus the firmware's own share (see firmware_overhead)."""
    from ..target.boards import load_board

    board = load_board(board_name)
    fw_flash, fw_ram, how = firmware_overhead(board_name, model, input_shape, calib_x)
    return Budget(flash_bytes=board.flash.size - fw_flash, ram_bytes=board.ram.size - fw_ram,
                  macs=macs, board=board.name, firmware_flash=fw_flash, firmware_ram=fw_ram,
                  source=how)


def _smallest_plan(model: nn.Module, graph: DependencyGraph, shape: Sequence[int],
                   round_to: int, protect: Iterable[str]) -> Plan:
    """Every unprotected prunable group at its floor: the smallest model pruning can make."""
    from .plan import resolve_protect

    protected = resolve_protect(graph, protect)
    ratios = {g.name: 0.999999 for g in graph.prunable() if g.name not in protected}
    return make_plan(model, shape, ratios=ratios, round_to=round_to, protect=protect,
                     graph=graph)


def fit_to_budget(
    model: nn.Module,
    splits: DataSplits,
    budget: Budget | str,
    *,
    macs: int | None = None,
    criterion: str = "l1",
    rankings: Sequence[str] = ("local", "global"),
    protect: Iterable[str] = (),
    round_to: int | None = None,
    search_epochs: int = 2,
    seed: int = 0,
    calibration_samples: int = 200,
    bisect_steps: int = _BISECT_STEPS,
    progress: Callable[[str], None] | None = None,
    fit_by: str = "channels",
    sparsity_pattern: str = "unstructured",
) -> FitResult:
    """Find the plan that fits ``budget`` (a Budget, or a board name) with the best accuracy.

    ``round_to`` defaults to the board's (4 on DSP cores). Each ranking's
    largest fitting plan is fine-tuned for ``search_epochs`` and judged on
    the validation split; the test split is not touched. ``bisect_steps``
    sets how finely the MAC ratio is searched (each step is one codegen
    sizing). Raises FitError with the smallest size reached when nothing fits.
    ``fit_by`` and ``sparsity_pattern``: see the module docstring.
    """
    from ..train.fit import evaluate, train

    if fit_by not in FIT_BY:
        raise ValueError(f"fit_by must be one of {FIT_BY}, got {fit_by!r}")
    if sparsity_pattern not in FIT_SPARSITY_PATTERNS:
        raise ValueError(f"sparsity_pattern must be one of {FIT_SPARSITY_PATTERNS}, "
                         f"got {sparsity_pattern!r}")

    say = progress or (lambda _msg: None)
    shape = (1, *splits.input_shape)
    calib = splits.x_train[:calibration_samples]
    graph = analyze(model, shape)
    board_name = budget if isinstance(budget, str) else budget.board
    if round_to is None:
        round_to = round_to_for_board(board_name)
    smallest = _smallest_plan(model, graph, shape, round_to, protect)
    if isinstance(budget, str):
        say(f"measuring the firmware's own size on {budget}")
        budget = board_budget(budget, apply_plan(model, smallest, graph=graph), shape, calib,
                              macs)
    elif macs is not None:
        budget = dataclasses.replace(budget, macs=macs)
    codegen_board = budget.board or "host"
    cost = CostModel(model, graph, shape)
    sizes: dict[tuple[str, float], tuple[Plan, ModelSize]] = {}

    def sized(ranking: str, ratio: float) -> tuple[Plan, ModelSize]:
        key = (ranking, round(ratio, 6))
        if key not in sizes:
            plan = (make_plan(model, shape, ratio, criterion=criterion, protect=protect,
                              round_to=round_to, ranking=ranking, seed=seed, graph=graph,
                              data=(splits.x_train, splits.y_train))
                    if ratio < 1.0 else Plan({}, shape))
            size = size_model(apply_plan(model, plan, graph=graph), shape, calib, codegen_board)
            sizes[key] = (plan, size)
            say(f"{ranking} MAC ratio {ratio:.3f}: flash {size.flash:,} B, RAM {size.ram:,} B")
        return sizes[key]

    if fit_by != "channels":
        return _fit_with_sparsity(
            model, splits, budget, fit_by=fit_by, pattern=sparsity_pattern, graph=graph,
            smallest=smallest, criterion=criterion, rankings=rankings, protect=protect,
            round_to=round_to, search_epochs=search_epochs, seed=seed, calib=calib,
            bisect_steps=bisect_steps, say=say)
    small_size = size_model(apply_plan(model, smallest, graph=graph), shape, calib, codegen_board)
    if not budget.fits(small_size):
        raise FitError(
            f"no pruning level fits: the smallest model pruning can make "
            f"({'; '.join(f'{k}: {len(v)}' for k, v in smallest.items())} channels) needs "
            f"flash {small_size.flash:,} B, RAM {small_size.ram:,} B, {small_size.macs:,} MACs; "
            + budget.describe() + ". Protect fewer layers, use a smaller architecture, or a "
            "board with more memory"
        )
    floor_ratio = max(_MIN_RATIO, cost.macs(graph.keep_vector(smallest)) / cost.macs_before)
    candidates: list[dict[str, Any]] = []
    best: FitResult | None = None
    for ranking in rankings:
        plan, size = sized(ranking, 1.0)
        lo = 1.0
        if not budget.fits(size):
            lo, hi = floor_ratio, 1.0  # lo fits, hi does not
            for _ in range(bisect_steps):
                mid = (lo + hi) / 2
                try:
                    _, size = sized(ranking, mid)
                except ValueError:  # the MAC target is below what this ranking can reach
                    lo = mid
                    continue
                if budget.fits(size):
                    lo = mid
                else:
                    hi = mid
            plan, size = sized(ranking, lo) if lo > floor_ratio else (smallest, small_size)
        net = apply_plan(model, plan, graph=graph)
        val = None
        if search_epochs > 0:
            train(net, splits, epochs=search_epochs, seed=seed, progress=False,
                  description=f"search {ranking}")
            val = evaluate(net, splits.x_val, splits.y_val)
        candidates.append({"ranking": ranking, "target_mac_ratio": lo, "flash_bytes": size.flash,
                           "ram_bytes": size.ram, "macs": size.macs, "val_accuracy": val,
                           "kept": {k: len(v) for k, v in plan.items()}})
        if best is None or (val or 0.0) > (best.val_accuracy or 0.0):
            best = FitResult(plan=plan, target_mac_ratio=lo, ranking=ranking, size=size,
                             budget=budget, val_accuracy=val)
        if lo == 1.0:
            break  # unpruned fits: nothing to choose between
    assert best is not None
    best.candidates = candidates
    return best


def size_sparse(model: nn.Module, sparsity: float, pattern: str, input_shape: Sequence[int],
                calib_x: np.ndarray, board_name: str = "host") -> ModelSize:
    """size_model of ``model`` with ``sparsity`` of its weights zeroed by ``pattern``
    (global magnitude ranking, as ``prune(weight_sparsity=)``); ``model`` is not changed.
    The flash is what ``generate(sparse="auto")`` emits: layers stored compressed where
    that takes fewer bytes."""
    import copy

    from .unstructured import apply_masks, make_masks

    if sparsity <= 0:
        return size_model(model, input_shape, calib_x, board_name)
    masked = copy.deepcopy(model)
    apply_masks(masked, make_masks(masked, sparsity, pattern, input_shape=input_shape))
    return size_model(masked, input_shape, calib_x, board_name)


class _SparsitySizer:
    """size_sparse for one model at many sparsities, exporting ONNX once.

    The ONNX export is most of size_model's time; the masks change only the
    values of the Conv/Linear weights, whose initializers the exporter names
    after the parameters. Each size swaps the masked weights in and runs
    import, quantization and codegen. Falls back to size_sparse where a
    weight has no initializer of its name and shape (e.g. folded by the
    exporter).
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int], calib_x: np.ndarray,
                 board_name: str) -> None:
        import onnx

        from ..export.onnx_export import export_onnx
        from .macs import count_macs_params

        self.model, self.shape, self.calib, self.board = model, input_shape, calib_x, board_name
        self.layouts = None  # flattened Linears' (C, H*W), for block / N:M masks
        self._tmp = tempfile.TemporaryDirectory()
        path = Path(self._tmp.name) / "model.onnx"
        export_onnx(model, input_shape, path, num_checks=1)
        self.proto = onnx.load(path)
        self.inits = {i.name: tuple(i.dims) for i in self.proto.graph.initializer}
        self.macs, self.params = count_macs_params(model, input_shape)

    def size(self, sparsity: float, pattern: str) -> ModelSize:
        import onnx
        from onnx import numpy_helper

        from ..codegen.generate import generate
        from ..ir.onnx_import import import_onnx, nchw_to_ir
        from ..quantize.quantize import quantize
        from .unstructured import flattened_layouts, make_masks

        if pattern in ("block", "n:m") and self.layouts is None:
            self.layouts = flattened_layouts(self.model, self.shape)  # traced once
        masks = make_masks(self.model, sparsity, pattern,
                           layouts=self.layouts) if sparsity > 0 else {}
        modules = dict(self.model.named_modules())
        weights = {f"{n}.weight": (modules[n].weight.detach() * m).numpy()
                   for n, m in masks.items()}
        if any(self.inits.get(k) != v.shape for k, v in weights.items()):
            return size_sparse(self.model, sparsity, pattern, self.shape, self.calib, self.board)
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        for init in proto.graph.initializer:
            if init.name in weights:
                init.CopyFrom(numpy_helper.from_array(
                    weights[init.name].astype(numpy_helper.to_array(init).dtype), init.name))
        with tempfile.TemporaryDirectory(dir=self._tmp.name) as tmp:
            path = Path(tmp) / "model.onnx"
            onnx.save(proto, path)
            qgraph = quantize(import_onnx(path), nchw_to_ir(self.calib))
            gen = generate(qgraph, Path(tmp) / "generated", board_name=self.board)
        return ModelSize(flash=int(gen.weight_bytes), ram=int(gen.plan.arena_size),
                         macs=self.macs, params=self.params)


def _fits_without_flash(budget: Budget, size: ModelSize) -> bool:
    """RAM and MACs fit: what sparsity cannot change (the arena and the MAC count stay)."""
    return size.ram <= budget.ram_bytes and (budget.macs is None or size.macs <= budget.macs)


def least_sparsity_to_fit(model: nn.Module, budget: Budget, pattern: str,
                          input_shape: Sequence[int], calib_x: np.ndarray,
                          steps: int = _SPARSITY_STEPS,
                          say: Callable[[str], None] = lambda _m: None
                          ) -> tuple[float | None, ModelSize]:
    """The smallest weight sparsity (bisection over [0, MAX_FIT_SPARSITY]) at which
    ``model`` fits ``budget``, and its size; (None, size) when no sparsity can make it fit
    (RAM or MACs over budget, or still too much flash at MAX_FIT_SPARSITY)."""
    sizer = _SparsitySizer(model, input_shape, calib_x, budget.board or "host")
    dense = sizer.size(0.0, pattern)
    if budget.fits(dense):
        return 0.0, dense
    if not _fits_without_flash(budget, dense):
        return None, dense
    top = sizer.size(MAX_FIT_SPARSITY, pattern)
    if not budget.fits(top):
        return None, top
    lo, hi, hi_size = 0.0, MAX_FIT_SPARSITY, top
    for _ in range(steps):
        mid = (lo + hi) / 2
        size = sizer.size(mid, pattern)
        say(f"{pattern} sparsity {mid:.3f}: flash {size.flash:,} B")
        if budget.fits(size):
            hi, hi_size = mid, size
        else:
            lo = mid
    # Round up to whole percent so the report reads cleanly; more zeros never add bytes
    # by more than the rounding saves (the choice per layer is the fewest bytes).
    s = min(MAX_FIT_SPARSITY, float(np.ceil(hi * 100 - 1e-9) / 100))
    if s != hi:
        size = sizer.size(s, pattern)
        if budget.fits(size):
            hi, hi_size = s, size
    return hi, hi_size


def _fit_with_sparsity(model: nn.Module, splits: DataSplits, budget: Budget, *, fit_by: str,
                       pattern: str, graph: DependencyGraph, smallest: Plan, criterion: str,
                       rankings: Sequence[str], protect: Iterable[str], round_to: int,
                       search_epochs: int, seed: int, calib: np.ndarray, bisect_steps: int,
                       say: Callable[[str], None]) -> FitResult:
    """fit_to_budget for fit_by "sparsity" and "both" (see the module docstring)."""
    from ..train.fit import evaluate, train
    from .unstructured import sparsify

    shape = (1, *splits.input_shape)
    board = budget.board or "host"
    ranking = rankings[0]
    candidates: list[dict[str, Any]] = []
    results: list[FitResult] = []

    def plan_at(ratio: float) -> Plan:
        if ratio >= 1.0:
            return Plan({}, shape)
        return make_plan(model, shape, ratio, criterion=criterion, protect=protect,
                         round_to=round_to, ranking=ranking, seed=seed, graph=graph,
                         data=(splits.x_train, splits.y_train))

    def sparse_candidate(plan: Plan, ratio: float, kind: str) -> None:
        net = apply_plan(model, plan, graph=graph)
        s, size = least_sparsity_to_fit(net, budget, pattern, shape, calib, say=say)
        row: dict[str, Any] = {"kind": kind, "ranking": ranking, "target_mac_ratio": ratio,
                               "weight_sparsity": s, "flash_bytes": size.flash,
                               "ram_bytes": size.ram, "macs": size.macs, "val_accuracy": None,
                               "kept": {k: len(v) for k, v in plan.items()}}
        candidates.append(row)
        if s is None:
            row["why_not"] = ("RAM or MACs over budget" if not _fits_without_flash(budget, size)
                              else f"flash over budget at {MAX_FIT_SPARSITY:.0%} sparsity")
            return
        if search_epochs > 0:
            if s > 0:
                sparsify(net, splits, s, pattern=pattern, epochs_per_step=search_epochs,
                         seed=seed)
            else:
                train(net, splits, epochs=search_epochs, seed=seed, progress=False,
                      description=f"search {kind}")
            row["val_accuracy"] = evaluate(net, splits.x_val, splits.y_val)
        results.append(FitResult(plan=plan, target_mac_ratio=ratio, ranking=ranking, size=size,
                                 budget=budget, val_accuracy=row["val_accuracy"],
                                 weight_sparsity=s, sparsity_pattern=pattern if s else None,
                                 fit_by=fit_by))

    if fit_by == "sparsity":
        sparse_candidate(Plan({}, shape), 1.0, "sparsity only")
        if not results:
            size = candidates[0]
            if size["ram_bytes"] > budget.ram_bytes or (
                    budget.macs is not None and size["macs"] > budget.macs):
                raise FitError(
                    f"--fit-by sparsity cannot fit: the unpruned model needs RAM "
                    f"{size['ram_bytes']:,} B and {size['macs']:,} MACs, and sparsity saves "
                    f"flash only (the arena and the MAC count stay); " + budget.describe()
                    + ". Use --fit-by both (channels for RAM, sparsity for flash) or channels")
            raise FitError(
                f"--fit-by sparsity cannot fit: at {MAX_FIT_SPARSITY:.0%} {pattern} sparsity "
                f"the model still needs flash {size['flash_bytes']:,} B; " + budget.describe()
                + ". Use --fit-by both or channels, or a board with more flash")
    else:
        channel_ratio = None
        try:
            ch = fit_to_budget(model, splits, budget, criterion=criterion, rankings=rankings,
                               protect=protect, round_to=round_to, search_epochs=search_epochs,
                               seed=seed, calibration_samples=len(calib),
                               bisect_steps=bisect_steps, progress=say)
            ch.fit_by = fit_by
            channel_ratio = ch.target_mac_ratio
            candidates += [dict(c, kind="channels only", weight_sparsity=0.0)
                           for c in ch.candidates]
            results.append(ch)
        except FitError as exc:
            candidates.append({"kind": "channels only", "why_not": str(exc)})
        # The largest channel plan whose RAM and MACs fit (flash left to sparsity).
        cost = CostModel(model, graph, shape)
        floor = max(_MIN_RATIO, cost.macs(graph.keep_vector(smallest)) / cost.macs_before)
        full = size_model(model, shape, calib, board)
        if _fits_without_flash(budget, full):
            ram_ratio = 1.0
        else:
            lo, hi = floor, 1.0
            for _ in range(bisect_steps):
                mid = (lo + hi) / 2
                try:
                    size = size_model(apply_plan(model, plan_at(mid), graph=graph), shape,
                                      calib, board)
                except ValueError:
                    lo = mid
                    continue
                lo, hi = (mid, hi) if _fits_without_flash(budget, size) else (lo, mid)
            ram_ratio = lo
        if channel_ratio is None or ram_ratio > channel_ratio * 1.1:
            sparse_candidate(plan_at(ram_ratio), ram_ratio, "channels for RAM + sparsity")
            if channel_ratio is not None and ram_ratio > channel_ratio * 1.5:
                mid = float(np.sqrt(ram_ratio * channel_ratio))
                sparse_candidate(plan_at(mid), mid, "channels + sparsity (between)")
        if not results:
            raise FitError("--fit-by both: neither channel pruning nor channels with up to "
                           f"{MAX_FIT_SPARSITY:.0%} sparsity fit; " + budget.describe()
                           + f"; candidates: {candidates}")
    best = max(results, key=lambda r: r.val_accuracy or 0.0)  # ties: the first (channels)
    best.candidates = candidates
    return best
