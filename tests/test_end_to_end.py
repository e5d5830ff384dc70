"""The whole path on the default emulated board: train -> ... -> validate over serial in QEMU."""

from __future__ import annotations

import json

from conftest import requires_qemu

from microfit.cli import main


@requires_qemu
def test_run_end_to_end_on_qemu_m4(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["-q", "run", "--out", str(out), "--epochs", "12", "--finetune-epochs", "6",
                 "--limit", "120"])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    rep = json.loads((out / "report.json").read_text())
    stages = {s["stage"]: s for s in rep["stages"]}
    assert {"float", "pruned", "int8 (reference)", "int8 (device)"} <= set(stages)
    assert stages["int8 (reference, same 120)"]["accuracy"] is not None
    # structured pruning really removed work
    assert stages["pruned"]["macs"] * 2 <= stages["float"]["macs"]
    assert stages["pruned"]["params"] < stages["float"]["params"]
    # the device computes exactly what the reference computes
    dev = rep["device"]
    assert dev["samples"] == 120
    assert dev["agreement"] == 1.0, dev["mismatched_samples"]
    assert dev["counter_kind"] == "instructions"
    assert dev["per_inference"]["median"] > stages["pruned"]["macs"]  # >= 1 instruction per MAC
    assert stages["int8 (device)"]["accuracy"] > 0.85
    mem = rep["memory"]
    assert 0 < mem["flash_used"] < mem["flash_limit"]
    assert mem["arena"] >= mem["arena_lower_bound"] > 0
    md = (out / "report.md").read_text()
    assert "QEMU counts executed instructions" in md
    for artifact in ("data.npz", "float.pt", "pruned.pt", "prune_plan.json", "float.onnx",
                     "quant.json", "generated/model.c", "build.json", "validate.json"):
        assert (out / artifact).exists(), artifact
