"""The report's memory lines: the arena beside its lower bound, the sum of all tensors, and
TFLite Micro's arena for the same model (from its interpreter, on this host), or the reason
there is no such number."""

from __future__ import annotations

import json
import shutil
import struct

import flatbuffers
import numpy as np
import pytest
from tflite_cases import conv_graph

from microfit import stages
from microfit.codegen.tflm import tflm_arena, tflm_arena_of_tflite
from microfit.ir.tflite_export import export_tflite
from microfit.report.report import build_report, render_markdown, write_report
from microfit.runfolder import RunFolder

pytest.importorskip("tflite_micro", reason="pip install tflite-micro")


@pytest.fixture(scope="module")
def qgraph():
    return conv_graph(np.random.default_rng(5), h=8, w=8, cin=3, cout=8, act="RELU")


def test_tflm_arena_of_a_conv_on_this_host(qgraph):
    rec = tflm_arena(qgraph)
    assert rec["reason"] is None, rec
    # Its activation plan holds at least the input and output tensors at once.
    assert rec["head"] >= 8 * 8 * 3 + 8 * 8 * 8
    assert rec["total"] > rec["head"]  # plus the interpreter's own records
    assert rec["host"].endswith(f"{8 * struct.calcsize('P')}-bit")
    assert rec["tflite_micro"]


def test_op_tflm_lacks_gives_the_reason_not_a_number(qgraph):
    from microfit.ir.tflite_schema import schema

    s = schema()
    model = s.ModelT.InitFromObj(s.Model.GetRootAs(export_tflite(qgraph), 0))
    for code in model.operatorCodes:  # CONV_2D -> an op TFLite Micro has no kernel for
        code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.SKIP_GRAM
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), b"TFL3")
    rec = tflm_arena_of_tflite(bytes(b.Output()))
    assert rec["head"] is None and rec["total"] is None
    assert "SKIP_GRAM" in rec["reason"] and "rejected" in rec["reason"]


def test_graph_without_tflite_form_gives_the_reason(qgraph):
    import copy

    float_graph = copy.deepcopy(qgraph)
    for t in float_graph.tensors.values():
        t.quant = None
    rec = tflm_arena(float_graph)
    assert rec["head"] is None and "no .tflite form" in rec["reason"]


def test_missing_tflite_micro_is_named_with_the_fix(qgraph):
    """A Python without the package (the system's, outside the venv) gives the reason."""
    import subprocess

    py = shutil.which("python3", path="/usr/bin:/bin")
    if py is None or subprocess.run([py, "-c", "import tflite_micro"],
                                    capture_output=True).returncode == 0:
        pytest.skip("no Python without tflite-micro on this machine")
    rec = tflm_arena_of_tflite(export_tflite(qgraph), python=py)
    assert rec["head"] is None and "pip install tflite-micro" in rec["reason"]


def test_report_states_arena_bound_sum_and_tflm(qgraph, tmp_path):
    run = RunFolder(tmp_path / "run").ensure()
    qgraph.save(run.file("quant.json"), run.file("quant.npz"))
    info = stages.stage_generate(run, target="host")
    assert info["tflm_arena"]["head"] > 0
    rep = write_report(run, plots=False)
    mem = rep["memory"]
    assert mem["arena_lower_bound"] <= mem["arena"] <= mem["sum_of_tensors"]
    assert mem["tflm_arena"] == info["tflm_arena"]
    md = run.file("report.md").read_text()
    assert f"arena: {mem['arena']:,} B; lower bound {mem['arena_lower_bound']:,} B" in md
    assert f"sum of all tensors {mem['sum_of_tensors']:,} B" in md
    assert f"TFLite Micro, same model as .tflite: {info['tflm_arena']['head']:,} B" in md
    assert f"ran on the generating host ({info['tflm_arena']['host']})" in md
    assert "- flash:" not in md  # not built: no flash or RAM line

    # No number from TFLite Micro: the line says why. An old generate.json: says to re-run.
    gen = json.loads(run.file("generate.json").read_text())
    gen["tflm_arena"] = {"head": None, "total": None, "host": "x86_64, 64-bit",
                         "tflite_micro": None, "reason": "tflite-micro is not installed"}
    run.write_json("generate.json", gen)
    assert "no figure: tflite-micro is not installed" in render_markdown(build_report(run))
    del gen["tflm_arena"]
    run.write_json("generate.json", gen)
    assert "re-run `microfit generate`" in render_markdown(build_report(run))
