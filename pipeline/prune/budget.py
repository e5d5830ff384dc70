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

    def to_json(self) -> dict[str, Any]:
        return {
            "board": self.budget.board, "ranking": self.ranking,
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
    from ..build.firmware import build_firmware
    from ..codegen.generate import generate
    from ..export.onnx_export import export_onnx
    from ..ir.onnx_import import import_onnx, nchw_to_ir
    from ..quantize.quantize import quantize
    from ..target.boards import load_board
    from ..target.project import render_project

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
) -> FitResult:
    """Find the plan that fits ``budget`` (a Budget, or a board name) with the best accuracy.

    ``round_to`` defaults to the board's (4 on DSP cores). Each ranking's
    largest fitting plan is fine-tuned for ``search_epochs`` and judged on
    the validation split; the test split is not touched. ``bisect_steps``
    sets how finely the MAC ratio is searched (each step is one codegen
    sizing). Raises FitError with the smallest size reached when nothing fits.
    """
    from ..train.fit import evaluate, train

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
