"""The stages of ``microfit run``, each reading and writing the run folder.

Each function here is what one CLI verb does. They exchange nothing but files
in the run folder (see runfolder.py), so each can be re-run alone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MicrofitError
from .runfolder import RunFolder

DEFAULT_TARGET = "qemu-mps2-an386"
DEFAULT_EPOCHS = 15  # the default digits CNN converges in ~10 (pipeline/train/fit.py)
DEFAULT_FINETUNE_EPOCHS = 10


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _load_model(run: RunFolder, weights: str):
    """Rebuild a model from the run's factory and load a saved state_dict."""
    import torch

    from .prune import load_plan, load_pruned
    from .train.models import instantiate, load_model_factory, make_default_model

    s = run.settings()
    factory = load_model_factory(s["model"]) if s.get("model") else make_default_model
    model = instantiate(factory, s.get("seed", 0))
    if weights == "pruned.pt":
        model = load_pruned(model, load_plan(run.need("prune_plan.json")), run.need(weights))
    else:
        model.load_state_dict(torch.load(run.need(weights), map_location="cpu", weights_only=True))
    model.eval()
    return model


def stage_train(run: RunFolder, model: str | None = None, data: str | None = None,
                epochs: int = DEFAULT_EPOCHS, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    import torch

    from .train.data import load_digits_splits, load_user_data, save_splits
    from .train.fit import evaluate, train
    from .train.models import instantiate, load_model_factory, make_default_model

    run.ensure()
    s = run.update_settings(model=model, data=data, seed=seed)
    splits = load_user_data(s["data"]) if s.get("data") else load_digits_splits(seed=seed)
    save_splits(splits, run.file("data.npz"))
    factory = load_model_factory(s["model"]) if s.get("model") else make_default_model
    net = instantiate(factory, seed)
    t0 = time.time()
    result = train(net, splits, epochs=epochs, seed=seed, progress=progress)
    torch.save(net.state_dict(), run.file("float.pt"))
    test_acc = evaluate(net, splits.x_test, splits.y_test)
    info = {
        "epochs": epochs,
        "best_epoch": result.best_epoch,
        "val_accuracy": result.val_acc,
        "test_accuracy": test_acc,
        "train_seconds": round(time.time() - t0, 2),
        "splits": {"train": len(splits.y_train), "val": len(splits.y_val), "test": len(splits.y_test)},
    }
    run.write_json("train.json", info)
    return info


def stage_prune(run: RunFolder, target_mac_ratio: float = 0.5,
                finetune_epochs: int = DEFAULT_FINETUNE_EPOCHS,
                seed: int = 0, progress: bool = True, **options: Any) -> dict[str, Any]:
    """``options``: criterion, ranking, round_to, protect, fit_target, fit_macs
    (microfit.prune.stage.prune_for_run)."""
    import torch

    from .export.onnx_export import export_onnx
    from .prune import count_macs_params, save_plan
    from .prune.stage import prune_for_run
    from .train.data import load_splits
    from .train.fit import evaluate

    splits = load_splits(run.need("data.npz"))
    model = _load_model(run, "float.pt")
    shape = (1,) + tuple(splits.input_shape)
    float_acc = evaluate(model, splits.x_test, splits.y_test)
    t0 = time.time()
    res, extra = prune_for_run(model, splits, target_mac_ratio, finetune_epochs, seed, progress,
                               board=run.settings().get("target"), **options)
    save_plan(res.plan, run.file("prune_plan.json"))
    torch.save(res.model.state_dict(), run.file("pruned.pt"))
    pruned_acc = evaluate(res.model, splits.x_test, splits.y_test)
    export_onnx(res.model, shape, run.file("float.onnx"))
    macs, params = count_macs_params(res.model, shape)
    info = {
        "target_mac_ratio": target_mac_ratio,
        "finetune_epochs": finetune_epochs,
        "macs_before": res.macs_before, "macs_after": res.macs_after,
        "params_before": res.params_before, "params_after": res.params_after,
        "mac_ratio": res.macs_after / max(res.macs_before, 1),
        "float_test_accuracy": float_acc,
        "pruned_test_accuracy": pruned_acc,
        "prune_seconds": round(time.time() - t0, 2),
    }
    assert macs == res.macs_after and params == res.params_after, "MAC count mismatch"
    info.update(extra)
    run.write_json("prune.json", info)
    return info


def stage_quantize(run: RunFolder, rounding: str = "double", calibration: str = "minmax",
                   calibration_samples: int = 500,
                   bias_correction: bool = False, qat: str = "off", qat_epochs: int = 5,
                   progress: bool = False) -> dict[str, Any]:
    """``qat``: "on", "off" or "auto" (fine-tune only when int8 loses more than 1 point on
    validation); see microfit.quantize.qat."""
    from .ir.graph import Graph
    from .ir.onnx_import import import_onnx, nchw_to_ir
    from .quantize.quantize import QuantizeConfig, quantize, quantize_input
    from .reference.executor import run_int8
    from .reference.float_exec import run_float
    from .train.data import load_splits

    fgraph: Graph = import_onnx(run.need("float.onnx"))
    splits = load_splits(run.need("data.npz"))
    # Calibrate on training data only: the test split stays unseen.
    calib = nchw_to_ir(splits.x_train[:calibration_samples])
    config = QuantizeConfig(rounding=rounding, calibration=calibration,
                            bias_correction=bias_correction)
    qgraph = quantize(fgraph, calib, config)
    qat_info = None
    if qat != "off":
        from .quantize.qat import qat_for_run

        fgraph, qgraph, qat_info = qat_for_run(
            run, fgraph, qgraph, lambda g: quantize(g, calib, config), qat, qat_epochs,
            calibration, calibration_samples, progress=progress)
    qgraph.save(run.file("quant.json"), run.file("quant.npz"))
    x_test = nchw_to_ir(splits.x_test)
    float_pred = run_float(fgraph, x_test).argmax(-1)
    xq = quantize_input(x_test, qgraph.tensors[qgraph.inputs[0]].quant)
    out = run_int8(qgraph, xq)
    int8_pred = out.reshape(len(out), -1).argmax(-1)
    info = {
        "rounding": rounding,
        "calibration": calibration,
        "calibration_samples": int(len(calib)),
        "bias_correction": bias_correction,
        "ir_float_test_accuracy": float(np.mean(float_pred == splits.y_test)),
        "int8_test_accuracy": float(np.mean(int8_pred == splits.y_test)),
        "test_samples": int(len(splits.y_test)),
        "int8_float_top1_agreement": float(np.mean(int8_pred == float_pred)),
        "qat": qat_info,
        "macs": qgraph.macs(),
        "params": qgraph.params(),
        "nodes": [f"{n.op} {n.name}" for n in qgraph.nodes],
    }
    run.write_json("quantize.json", info)
    return info


def stage_generate(run: RunFolder, target: str | None = None,
                   tflite: Path | None = None, kernels: str | None = None,
                   sparse: str = "auto") -> dict[str, Any]:
    from .codegen.generate import generate
    from .ir.graph import Graph

    target = target or run.settings().get("target") or DEFAULT_TARGET
    run.ensure()
    run.update_settings(target=target)
    if tflite is not None:
        # An int8 .tflite replaces train/prune/quantize: it becomes quant.json.
        from .ir.tflite_import import import_tflite

        import_tflite(tflite).save(run.file("quant.json"), run.file("quant.npz"))
        run.update_settings(tflite=str(tflite))
    qgraph = Graph.load(run.need("quant.json"), run.need("quant.npz"))
    gen = generate(qgraph, run.file("generated"), board_name=target, kernels=kernels,
                   sparse=sparse)
    info = gen.summary()
    from .codegen.tflm import tflm_arena

    # TFLite Micro's arena for the same model, for the report (about 0.3 s, a child process).
    info["tflm_arena"] = tflm_arena(qgraph)
    run.write_json("generate.json", info)
    return info


def stage_build(run: RunFolder, target: str | None = None) -> dict[str, Any]:
    from .target.boards import load_board
    from .target.project import render_project
    from .toolchain.firmware import build_firmware

    target = target or run.settings().get("target") or DEFAULT_TARGET
    run.update_settings(target=target)
    board = load_board(target)
    project = render_project(board, run.need("generated"), run.file("firmware"))
    res = build_firmware(project, board)
    info = res.to_json() if hasattr(res, "to_json") else dict(res.__dict__)
    info["board"] = board.name
    info["code_bytes"] = _code_bytes(run.file("firmware") / "firmware.map")
    from .target.arduino import export_for_run  # Arduino boards: the model as a library too

    library = export_for_run(run.path, board)
    if library is not None:
        info["arduino_library"] = str(library)
    run.write_json("build.json", info)
    return info


def _code_bytes(map_file: Path) -> dict[str, Any]:
    """Linked bytes by origin, from the linker's map: the runtime's kernels (per object),
    the generated model code, its weights. {"reason": ...} when there is no usable map."""
    from .codegen.codesize import code_size_from_map

    if not map_file.is_file():
        return {"reason": f"no linker map ({map_file.name}) in the firmware project"}
    try:
        size = code_size_from_map(map_file)
    except ValueError as exc:
        return {"reason": str(exc)}
    return {"runtime": size.runtime_code, "model": size.model_code, "weights": size.weights,
            "runtime_by_object": size.runtime_functions(), "reason": None}


def stage_validate(run: RunFolder, port: str | None = None, limit: int | None = None,
                   progress: bool = True, baud: int = 115200, timeout: float = 10.0,
                   retries: int = 3) -> dict[str, Any]:
    from contextlib import nullcontext

    from .emulate import emulator_session
    from .harness.client import DeviceClient
    from .harness.validate import validate
    from .ir.graph import Graph
    from .ir.onnx_import import nchw_to_ir
    from .quantize.quantize import quantize_input
    from .reference.executor import run_int8
    from .target.boards import load_board
    from .train.data import load_splits

    s = run.settings()
    board = load_board(s.get("target") or DEFAULT_TARGET)
    qgraph = Graph.load(run.need("quant.json"), run.need("quant.npz"))
    splits = load_splits(run.need("data.npz"))
    x = nchw_to_ir(splits.x_test)
    y = splits.y_test
    if limit:
        x, y = x[:limit], y[:limit]
    xq = quantize_input(x, qgraph.tensors[qgraph.inputs[0]].quant)
    expected = run_int8(qgraph, xq)
    if port is None and getattr(board, "emulator", None) is None:
        raise MicrofitError(f"board {board.name} has no emulator: give --port (e.g. /dev/ttyACM0) "
                            "for the real board")
    # With --port the device is already running: build.json is not needed.
    ctx = (emulator_session(board, Path(run.read_json("build.json")["elf"])) if port is None
           else nullcontext(port))
    with ctx as url:
        client = DeviceClient(url, baud=baud, timeout=timeout, retries=retries)
        try:
            info = client.hello(expected_hash=qgraph.content_hash()[:8])
            res = validate(client, xq.reshape(len(xq), -1), labels=y,
                           expected=expected.reshape(len(expected), -1), progress=progress,
                           layer_names=[f"{n.op} {n.name}" for n in qgraph.nodes])
        finally:
            client.close()
    out = res.to_json() if hasattr(res, "to_json") else dict(res.__dict__)
    out["device"] = info.to_json() if hasattr(info, "to_json") else dict(info.__dict__)
    out["port"] = port or board.emulator.kind
    if getattr(ctx, "stack_peak", None) is not None:  # simavr measures the stack it used
        out["stack_peak_bytes"] = ctx.stack_peak
    out["reference_accuracy"] = float(np.mean(expected.reshape(len(expected), -1).argmax(-1) == y))
    run.write_json("validate.json", out)
    return out
