"""The `microfit` command: one verb per stage, `run` for all of them in order.

Every verb but `run` and `targets` works on an existing run folder, reading the
artifacts earlier verbs wrote there. Errors print one clear message (cause and
fix) and exit with status 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import __version__
from .errors import MicrofitError
from .runfolder import RunFolder
from .stages import DEFAULT_EPOCHS, DEFAULT_FINETUNE_EPOCHS, DEFAULT_TARGET

DESCRIPTION = """\
microfit shrinks a PyTorch model until it fits a microcontroller (structured
pruning, int8 quantization), generates plain C, builds the firmware and
validates it on the device (or its emulator) over a serial link.

Typical use:
  microfit run --out runs/demo                  # default digits CNN on QEMU mps2-an386
  microfit run --model net.py:make --data data.py:load --target qemu-mps2-an386 --out runs/x
  microfit validate runs/x --port /dev/ttyACM0  # a real board
"""


def _add_run_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run folder (made by `microfit train` or `run`)")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model factory FILE.py:FUNCTION returning an nn.Module "
                   "(default: the built-in digits CNN)")
    p.add_argument("--data", help="data loader FILE.py:FUNCTION returning the splits "
                   "(default: scikit-learn's digits, seeded split)")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                   help=f"training epochs (default {DEFAULT_EPOCHS})")
    p.add_argument("--seed", type=int, default=0, help="seed for the split, init and training")


def _add_prune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mac-ratio", type=float, default=0.5,
                   help="keep at most this fraction of the MACs (default 0.5: 2x fewer)")
    p.add_argument("--finetune-epochs", type=int, default=DEFAULT_FINETUNE_EPOCHS,
                   help=f"fine-tuning epochs (default {DEFAULT_FINETUNE_EPOCHS})")
    p.add_argument("--criterion", default="l1",
                   choices=("l1", "l2", "l1_filter", "bn_scale", "taylor", "random"),
                   help="channel importance (default l1)")
    p.add_argument("--ranking", choices=("local", "global"), default="local",
                   help="rank channels per layer (local, default) or across layers (global)")
    p.add_argument("--round-to", type=int, default=None,
                   help="keep channel counts a multiple of this (default: 4 on Cortex-M4/M7, else 1)")
    p.add_argument("--protect", action="append", default=[], metavar="LAYER",
                   help="leave this layer's channels whole (repeatable)")
    p.add_argument("--fit-target", metavar="BOARD",
                   help="search the pruning that fits BOARD's flash/RAM (minus the firmware) "
                   "with the best validation accuracy; replaces --mac-ratio")
    p.add_argument("--fit-macs", type=int, default=None,
                   help="with --fit-target: also keep at most this many MACs")
    p.add_argument("--fit-by", choices=("channels", "sparsity", "both"), default="channels",
                   help="what the budget search (--fit-target, or run --target) may use: remove "
                   "channels (default), zero weights stored sparse (saves flash, not RAM), or "
                   "both; the best validation accuracy wins (docs/sparsity.md)")
    p.add_argument("--sparsity-pattern", choices=("unstructured", "block"),
                   default="unstructured",
                   help="with --fit-by sparsity/both: single weights or 1x4 blocks")
    p.add_argument("--schedule", default="one-shot",
                   choices=("one-shot", "iterative", "imp-weight-rewind", "imp-lr-rewind",
                            "gradual"), help="how to reach the MAC target (default one-shot)")
    p.add_argument("--steps", type=int, default=3, help="steps of a multi-step schedule")
    p.add_argument("--distill", action="store_true",
                   help="fine-tune with knowledge distillation from the unpruned model")
    p.add_argument("--weight-sparsity", type=float, default=0.0,
                   help="also zero this fraction of weights by magnitude (unstructured; "
                   "generate stores layers compressed where that saves flash, see --sparse)")


def _prune_options(args: argparse.Namespace) -> dict:
    return {"criterion": args.criterion, "ranking": args.ranking, "round_to": args.round_to,
            "protect": args.protect, "fit_target": args.fit_target, "fit_macs": args.fit_macs,
            "schedule": args.schedule, "steps": args.steps, "distill": args.distill,
            "weight_sparsity": args.weight_sparsity, "fit_by": args.fit_by,
            "sparsity_pattern": args.sparsity_pattern}


def _add_quant_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounding", choices=("double", "single"), default="double",
                   help="requantization rounding: 'double' = TFLite Micro / CMSIS-NN (what devices "
                   "run, default), 'single' = TFLite's TFLITE_SINGLE_ROUNDING builds")
    p.add_argument("--calibration", choices=("minmax", "moving_average", "percentile", "mse"),
                   default="minmax",
                   help="activation range calibration: minmax (default), moving_average (EMA of "
                   "per-batch extremes), percentile (clips the rarest 0.01%%), mse (range with "
                   "the smallest int8 error); see docs/quantization.md")
    p.add_argument("--bias-correction", action="store_true",
                   help="subtract the mean error weight rounding adds to each output channel")
    p.add_argument("--calibration-samples", type=int, default=500,
                   help="training samples used to calibrate (default 500)")
    p.add_argument("--qat-epochs", type=int, default=5,
                   help="epochs of quantization-aware fine-tuning when it runs (default 5)")


def _add_target_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", help=f"board name from `microfit targets` (default {DEFAULT_TARGET})")


def _add_validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", help="serial port of a real board (/dev/ttyACM0, socket://host:port, "
                   "rfc2217://...); default: boot the board's emulator")
    p.add_argument("--baud", type=int, default=115200, help="baud rate (default 115200)")
    p.add_argument("--limit", type=int, help="validate only the first N test samples")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each reply")
    p.add_argument("--retries", type=int, default=3,
                   help="resends per request before giving up (default 3; raise it on a noisy line)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="microfit", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"microfit {__version__}")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")

    p = sub.add_parser("run", help="every stage in order: train, prune, quantize, generate, "
                       "build, validate, report")
    p.add_argument("--out", type=Path, default=Path("runs/run"), help="run folder (default runs/run)")
    _add_train_args(p)
    _add_prune_args(p)
    p.add_argument("--no-fit", action="store_true",
                   help="prune by --mac-ratio alone; by default `run` searches the largest model "
                   "within --mac-ratio that fits the --target board's flash and RAM")
    _add_quant_args(p)
    p.add_argument("--qat", choices=("auto", "on", "off"), default="auto",
                   help="quantization-aware fine-tuning of the pruned model: auto (default) runs it "
                   "only when int8 loses more than 1 point of validation accuracy")
    _add_target_arg(p)
    _add_validate_args(p)

    p = sub.add_parser("train", help="split the data and train the float model")
    _add_run_arg(p)
    _add_train_args(p)
    p = sub.add_parser("prune", help="structured channel pruning (to a MAC ratio or to fit a board) "
                       "+ fine-tuning, then ONNX export")
    _add_run_arg(p)
    _add_prune_args(p)
    p = sub.add_parser("sensitivity", help="validation accuracy after pruning each layer "
                       "group alone at several ratios: sensitivity.json/.csv/.png")
    _add_run_arg(p)
    p.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5, 0.75],
                   help="fractions of a group's channels to remove (default 0.25 0.5 0.75)")
    p.add_argument("--jobs", type=int, default=None,
                   help="worker processes (default: the machine's cores)")
    p.add_argument("--criterion", default="l1", help="channel importance (default l1)")
    p = sub.add_parser("quantize", help="import float.onnx, calibrate and quantize to int8")
    _add_run_arg(p)
    _add_quant_args(p)
    p.add_argument("--qat", action="store_const", const="on", default="off",
                   help="first fine-tune the pruned model with fake int8 quantization (qat.pt, "
                   "qat.onnx), then quantize that; see docs/quantization.md")
    p = sub.add_parser("generate", help="generate C sources (model.h/.c, weights, memory plan); "
                       "`generate model.tflite` starts from an int8 .tflite instead")
    p.add_argument("run", type=Path, help="run folder, or an int8 .tflite file (then the run "
                   "folder is the file's path without .tflite, or --out)")
    p.add_argument("--tflite", type=Path, help="import this int8 .tflite as the run's quant.json "
                   "first (no PyTorch or TensorFlow needed)")
    p.add_argument("--out", type=Path, help="run folder when RUN is a .tflite file")
    p.add_argument("--kernels", choices=["portable", "fast", "avr"],
                   help="kernel set (default: the one the target's core runs best: fast on "
                   "Cortex-M, avr on AVR; see docs/runtime.md)")
    p.add_argument("--sparse", choices=["auto", "rows", "blocks", "off"], default="auto",
                   help="auto (default): store each layer's weights compressed where that takes "
                   "fewer bytes; rows / blocks: only the compressed-rows / 1x4-block format "
                   "(blocks: the fastest on Cortex-M); off: all dense (docs/sparsity.md)")
    _add_target_arg(p)
    p = sub.add_parser("build", help="render the firmware project and compile it; check the fit")
    _add_run_arg(p)
    _add_target_arg(p)
    p = sub.add_parser("emulate", help="boot the firmware in the board's emulator and serve its "
                       "serial port until Ctrl-C")
    _add_run_arg(p)
    p.add_argument("--host", action="store_true",
                   help="instead, build the model with the device protocol as a host program and "
                   "serve it on a pseudo-terminal (/dev/pts/N)")
    p = sub.add_parser("flash", help="program a real board with the built firmware (avrdude, "
                       "pyocd, openocd, st-flash, UF2 copy, ...); prints the exact command")
    _add_run_arg(p)
    _add_target_arg(p)
    p.add_argument("--port", help="serial port of the board's bootloader (avrdude, arduino-cli) "
                   "or mount point of its UF2 drive (RP2040)")
    p.add_argument("--tool", help="use this flasher of the board file instead of the first "
                   "installed one")
    p.add_argument("--dry-run", action="store_true", help="print the command, do not run it")
    p = sub.add_parser("validate", help="send the test set to the device, compare with the "
                       "reference, measure latency")
    _add_run_arg(p)
    _add_validate_args(p)
    p = sub.add_parser("report", help="render report.md and plots from report.json (rebuilt from "
                       "the artifacts when they are newer) and print the summary")
    _add_run_arg(p)
    p.add_argument("--rebuild", action="store_true",
                   help="rebuild report.json from the run's artifacts even if it is current")
    sub.add_parser("targets", help="list the boards microfit knows, with their limits")
    return parser


def _step(console, title: str, fn: Callable[[], dict], quiet: bool) -> dict:
    t0 = time.time()
    if not quiet:
        console.rule(f"[bold]{title}")
    out = fn()
    if not quiet:
        console.print(f"[green]done[/green] {title} in {time.time() - t0:.1f} s")
    return out


def _cmd_targets(args, console) -> dict:
    from rich.table import Table

    from .target.boards import list_boards

    boards = list_boards()
    rows = [b.summary() if hasattr(b, "summary") else {"name": b.name} for b in boards]
    if not args.json:
        t = Table(title="microfit targets")
        cols = list(rows[0].keys()) if rows else ["name"]
        for c in cols:
            t.add_column(c, no_wrap=c == "name")
        for r in rows:
            t.add_row(*(str(r.get(c, "")) for c in cols))
        console.print(t)
    return {"targets": rows}


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0
    console = Console(stderr=True) if args.json else Console()
    progress = not args.quiet and not args.json
    from . import stages
    from .report.report import print_summary, write_report

    try:
        result: dict
        if args.verb == "targets":
            result = _cmd_targets(args, console)
        elif args.verb == "run":
            run = RunFolder(args.out).ensure()
            run.update_settings(target=args.target or DEFAULT_TARGET)
            q = args.quiet or args.json
            t0 = time.time()
            _step(console, "train", lambda: stages.stage_train(
                run, args.model, args.data, args.epochs, args.seed, progress), q)
            _step(console, "prune", lambda: stages.stage_prune(
                run, args.mac_ratio, args.finetune_epochs, args.seed, progress,
                **_prune_options(args), auto_fit=not args.no_fit), q)
            qinfo = _step(console, "quantize", lambda: stages.stage_quantize(
                run, args.rounding, args.calibration, args.calibration_samples,
                args.bias_correction, args.qat, args.qat_epochs, progress), q)
            if not q and qinfo.get("qat"):
                console.print(qinfo["qat"]["decision"], markup=False, highlight=False)
            _step(console, "generate", lambda: stages.stage_generate(run, args.target), q)
            _step(console, "build", lambda: stages.stage_build(run, args.target), q)
            _step(console, "validate", lambda: stages.stage_validate(
                run, args.port, args.limit, progress, args.baud, args.timeout, args.retries), q)
            result = write_report(run)
            result["wall_seconds"] = round(time.time() - t0, 1)
            if not args.json:
                print_summary(result, console)
                console.print(f"report: {run.file('report.md')}  ({result['wall_seconds']} s)")
        else:
            if args.verb == "generate" and args.run.suffix == ".tflite":
                args.tflite = args.tflite or args.run
                args.run = args.out or args.run.with_suffix("")
            run = RunFolder(args.run)
            if args.verb == "train":
                result = stages.stage_train(run, args.model, args.data, args.epochs, args.seed, progress)
            elif args.verb == "prune":
                result = stages.stage_prune(run, args.mac_ratio, args.finetune_epochs,
                                            run.settings().get("seed", 0), progress,
                                            **_prune_options(args))
            elif args.verb == "sensitivity":
                from .prune.stage import sensitivity_for_run

                result = sensitivity_for_run(run, args.ratios, args.jobs, args.criterion,
                                             progress)
            elif args.verb == "quantize":
                result = stages.stage_quantize(run, args.rounding, args.calibration,
                                               args.calibration_samples, args.bias_correction,
                                               args.qat, args.qat_epochs, progress)
            elif args.verb == "generate":
                result = stages.stage_generate(run, args.target, args.tflite, args.kernels,
                                               args.sparse)
            elif args.verb == "build":
                result = stages.stage_build(run, args.target)
            elif args.verb == "flash":
                from .flash import flash_run

                result = flash_run(run.path, args.target, args.port, args.tool, args.dry_run,
                                   echo=lambda m: console.print(m, markup=False, highlight=False))
            elif args.verb == "emulate":
                result = _emulate(run, console, host=args.host)
            elif args.verb == "validate":
                result = stages.stage_validate(run, args.port, args.limit, progress, args.baud,
                                               args.timeout, args.retries)
            elif args.verb == "report":
                result = write_report(run, rebuild=args.rebuild)
                if not args.json:
                    print_summary(result, console)
            else:  # pragma: no cover - argparse rejects unknown verbs
                parser.error(f"unknown verb {args.verb}")
            if not args.json and args.verb not in ("report",):
                console.print_json(json.dumps(_short(result), default=str))
        if args.json:
            print(json.dumps(result, indent=2, default=str))
        return 0
    except MicrofitError as exc:
        if args.debug:
            raise
        console.print(f"[bold red]error:[/bold red] {exc}")
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130


def _short(result: dict) -> dict:
    """Drop long per-sample lists from what is echoed on the terminal."""
    return {k: v for k, v in result.items() if not (isinstance(v, list) and len(v) > 20)}


def _emulate(run: RunFolder, console, host: bool = False) -> dict:
    from contextlib import AbstractContextManager

    from .emulate import emulator_session
    from .target.boards import load_board

    session: AbstractContextManager[str]
    if host:
        from .harness.hostdev import HostDevice, build_host_device

        elf = build_host_device(run.need("generated"), run.file("hostdev") / "mf_host_device")
        board_name = "host"
        session = HostDevice(elf)
    else:
        board = load_board(run.settings().get("target") or DEFAULT_TARGET)
        board_name = board.name
        elf = Path(run.read_json("build.json")["elf"])
        session = emulator_session(board, elf)
    with session as url:
        console.print(f"{board_name} is running {elf}; serial port: [bold]{url}[/bold]")
        console.print(f"validate it from another shell: microfit validate {run.path} --port {url}")
        console.print("Ctrl-C stops the emulator.")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return {"stopped": True}


if __name__ == "__main__":
    sys.exit(main())
