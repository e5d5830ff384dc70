"""Validation of a real generated model through the CLI: QEMU and the host device on a pty.

A small run folder is made once (the default CNN trained for one epoch,
exported, quantized, generated and built; no pruning, to stay fast), then
validated on the emulated Cortex-M4 and on the host build over a
pseudo-terminal, and reported: per-layer table, confusion matrix, latency,
throughput, plots, and `microfit report` re-rendering from report.json.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from conftest import requires_qemu

from microfit.cli import main
from microfit.report.plots import pareto_front
from microfit.runfolder import RunFolder

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc missing")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> RunFolder:
    """Made once per test session and shared by the xdist workers (a lock file
    serialises them): training and export dominate this file's time."""
    import fcntl

    from microfit import stages
    from microfit.export.onnx_export import export_onnx

    shared = tmp_path_factory.getbasetemp().parent
    run = RunFolder(shared / "microfit_tiny_run")
    with open(shared / "microfit_tiny_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not run.file("generated.done").exists():
            run.ensure()
            run.update_settings(target="qemu-mps2-an386")
            stages.stage_train(run, epochs=1, progress=False)
            export_onnx(stages._load_model(run, "float.pt"), (1, 1, 8, 8), run.file("float.onnx"))
            stages.stage_quantize(run, calibration_samples=200)
            stages.stage_generate(run)
            run.file("generated.done").write_text("")
    return run


def node_names(run: RunFolder) -> list[str]:
    return run.read_json("quantize.json")["nodes"]


@requires_qemu
def test_qemu_validation_and_its_report(tiny_run, tmp_path, capsys):
    from microfit import stages

    run = RunFolder(tmp_path / "run").ensure()
    shutil.copytree(tiny_run.path, run.path, dirs_exist_ok=True)
    stages.stage_build(run)
    assert main(["-q", "validate", str(run.path), "--limit", "40"]) == 0
    capsys.readouterr()
    val = run.read_json("validate.json")
    assert val["agreement"] == 1.0 and val["samples"] == 40
    # One row per model node, named after it; the layers account for the inference.
    layers = val["layers"]
    assert [row["name"] for row in layers] == node_names(tiny_run)
    total = val["counter_stats"]["median"]
    layer_sum = sum(row["median"] for row in layers)
    assert 0.97 * total <= layer_sum <= total
    convs = [row for row in layers if row["name"].startswith("CONV_2D")]
    assert convs and all(row["median"] > 0 for row in convs)
    assert all(row["median"] == 0 for row in layers if row["name"].startswith("RESHAPE"))
    # Confusion matrix and per-class accuracy agree with the accuracy.
    confusion = val["confusion"]
    assert sum(map(sum, confusion)) == 40
    assert sum(confusion[i][i] for i in range(len(confusion))) / 40 == pytest.approx(val["accuracy"])
    assert val["latency_us"] is None  # instructions are not time
    tp = val["throughput"]
    assert tp["samples_per_s"] > 0 and tp["line_limit_samples_per_s"] > 0
    assert tp["wire_bytes_per_sample"] > 64  # at least the input itself
    assert val["link"]["retries"] == val["retries"] == 0
    check_report(run)


def check_report(tiny_run: RunFolder) -> None:
    """report.json's schema, the plots, and re-rendering from report.json."""
    assert main(["-q", "report", str(tiny_run.path)]) == 0
    rep = tiny_run.read_json("report.json")
    assert rep["schema"] == 3
    # The arena beside its bound, all tensors, and TFLite Micro's arena (or why not).
    mem = rep["memory"]
    assert mem["arena_lower_bound"] <= mem["arena"] <= mem["sum_of_tensors"]
    assert mem["tflm_arena"]["head"] is not None or mem["tflm_arena"]["reason"]
    # Linked flash by origin, from the linker map: kernels apart from the model's weights.
    code = mem["code_bytes"]
    assert code["reason"] is None and code["runtime"] > 0 and code["weights"] > 0
    assert code["runtime"] == sum(code["runtime_by_object"].values())
    assert any(k.startswith("conv2d_s8") for k in code["runtime_by_object"])
    dev = rep["device"]
    for key in ("agreement", "per_inference", "latency_us", "throughput", "link", "layers",
                "confusion", "per_class_accuracy", "clock_hz"):
        assert key in dev, key
    assert {"float", "int8 (reference)", "int8 (device)"} <= {s["stage"] for s in rep["stages"]}
    for name in ("layers", "stages", "confusion"):
        png = tiny_run.path / rep["plots"][name]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    md = tiny_run.file("report.md").read_text()
    assert "### Per layer" in md and "CONV_2D" in md and "Confusion matrix" in md
    assert "not given (instructions are not time)" in md
    assert "runtime kernels" in md and "model code" in md

    # report.json is current: `report` renders it as it stands.
    rep["device"]["agreement"] = 0.5
    tiny_run.write_json("report.json", rep)
    assert main(["-q", "report", str(tiny_run.path)]) == 0
    assert "equal to the numpy reference: 50.00%" in tiny_run.file("report.md").read_text()
    # A newer artifact (or --rebuild) rebuilds it from the artifacts.
    later = time.time() + 5
    os.utime(tiny_run.file("validate.json"), (later, later))
    assert main(["-q", "report", str(tiny_run.path)]) == 0
    assert "equal to the numpy reference: 100.00%" in tiny_run.file("report.md").read_text()


@needs_gcc
def test_validate_over_a_pty_to_the_host_build(tiny_run, tmp_path, capsys):
    from microfit.harness.hostdev import HostDevice, build_host_device

    exe = build_host_device(tiny_run.need("generated"), tmp_path / "dev", sanitize=True)
    pty_run = RunFolder(tmp_path / "pty_run").ensure()
    for name in ("run.json", "data.npz", "quant.json", "quant.npz", "quantize.json"):
        shutil.copy(tiny_run.file(name), pty_run.file(name))
    with HostDevice(exe) as port:
        assert port.startswith("/dev/pts/")
        assert main(["-q", "validate", str(pty_run.path), "--port", port, "--limit", "25"]) == 0
    capsys.readouterr()
    val = pty_run.read_json("validate.json")
    assert val["port"] == port and val["device"]["board_name"] == "host-pty"
    assert val["agreement"] == 1.0 and val["samples"] == 25
    assert val["counter_kind"] == "nanoseconds"
    assert val["latency_us"]["median"] == pytest.approx(val["counter_stats"]["median"] / 1000)
    assert [row["name"] for row in val["layers"]] == node_names(tiny_run)


def test_pareto_front_keeps_only_undominated_points():
    points = [(100, 0.90), (50, 0.85), (80, 0.80), (50, 0.70), (200, 0.95), (150, 0.90)]
    assert pareto_front(points) == [(50, 0.85), (100, 0.90), (200, 0.95)]


def test_report_renders_a_sweep_pareto_plot(tmp_path):
    from microfit.report.report import write_report

    run = RunFolder(tmp_path / "r").ensure()
    run.write_json("quantize.json", {"params": 10, "macs": 100, "int8_test_accuracy": 0.9})
    run.write_json("sweep.json", {"points": [{"macs": m, "accuracy": a, "label": f"{m}"}
                                             for m, a in ((100, 0.9), (60, 0.88), (80, 0.85))]})
    rep = write_report(run)
    assert rep["plots"]["pareto"] == "plots/pareto.png"
    assert (run.path / "plots" / "pareto.png").stat().st_size > 1000
    assert "layers" not in rep["plots"]  # no device run, no per-layer figure
    assert json.loads(run.file("report.json").read_text())["sweep"][0]["macs"] == 100
