"""report.json, report.md and the summary table, from the run folder's artifacts.

The report only restates what the stages measured and wrote; re-rendering it
(`microfit report RUN`) never re-runs anything.
"""

from __future__ import annotations

from typing import Any

from ..runfolder import RunFolder

SCHEMA_VERSION = 1

COUNTER_NOTE = {
    "instructions": ("QEMU counts executed instructions (-icount shift=0), not cycles: "
                     "a real Cortex-M takes a different number of cycles for the same code."),
    "cycles": "Cycles counted by the device's cycle counter at its clock.",
}


def _opt(run: RunFolder, name: str) -> dict[str, Any] | None:
    p = run.file(name)
    if not p.exists():
        return None
    import json

    return json.loads(p.read_text())


def build_report(run: RunFolder) -> dict[str, Any]:
    s = run.settings()
    train = _opt(run, "train.json") or {}
    prune = _opt(run, "prune.json") or {}
    quant = _opt(run, "quantize.json") or {}
    gen = _opt(run, "generate.json") or {}
    build = _opt(run, "build.json") or {}
    val = _opt(run, "validate.json") or {}

    stages = []
    if prune:
        stages.append({"stage": "float", "params": prune["params_before"], "macs": prune["macs_before"],
                       "accuracy": prune["float_test_accuracy"]})
        stages.append({"stage": "pruned", "params": prune["params_after"], "macs": prune["macs_after"],
                       "accuracy": prune["pruned_test_accuracy"]})
    elif train:
        stages.append({"stage": "float", "params": None, "macs": None,
                       "accuracy": train["test_accuracy"]})
    if quant:
        stages.append({"stage": "int8 (reference)", "params": quant["params"], "macs": quant["macs"],
                       "accuracy": quant["int8_test_accuracy"]})
    if val:
        samples = val.get("samples")
        if quant and val.get("reference_accuracy") is not None and samples != quant.get("test_samples"):
            # --limit: show the reference on the same subset, so the rows compare like with like.
            stages.append({"stage": f"int8 (reference, same {samples})", "params": quant["params"],
                           "macs": quant["macs"], "accuracy": val["reference_accuracy"]})
        stages.append({"stage": "int8 (device)", "params": quant.get("params"),
                       "macs": quant.get("macs"), "accuracy": val.get("accuracy")})

    device: dict[str, Any] = {}
    if val:
        counter = val.get("counter_kind") or val.get("device", {}).get("counter_kind", "instructions")
        stats = val.get("counter_stats") or {}
        median = stats.get("median")
        macs = quant.get("macs") or gen.get("macs")
        device = {
            "board": s.get("target"),
            "port": val.get("port"),
            "samples": val.get("samples"),
            "agreement": val.get("agreement"),
            "mismatched_samples": val.get("mismatches", []),
            "counter_kind": counter,
            "per_inference": stats,
            "per_mac": (median / macs) if (median and macs) else None,
            "retries": val.get("retries", 0),
            "note": COUNTER_NOTE.get(counter, ""),
        }
    memory = {}
    if build:
        memory = {
            "flash_used": build.get("flash_bytes"), "flash_limit": build.get("flash_limit"),
            "ram_used": build.get("ram_bytes"), "ram_limit": build.get("ram_limit"),
            "arena": gen.get("arena_size"), "arena_lower_bound": gen.get("arena_lower_bound"),
            "weights": gen.get("weight_bytes"),
        }
    return {
        "schema": SCHEMA_VERSION,
        "run": str(run.path),
        "settings": s,
        "stages": stages,
        "device": device,
        "memory": memory,
        "quantization": {k: quant.get(k) for k in ("rounding", "calibration", "calibration_samples")}
        if quant else {},
        "pruning": {k: prune.get(k) for k in ("target_mac_ratio", "mac_ratio", "finetune_epochs")}
        if prune else {},
    }


def _fmt_int(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "-"
    return f"{round(v):,}"


def _fmt_pct(v: Any) -> str:
    return f"{100 * v:.2f}%" if isinstance(v, (int, float)) else "-"


def _kb(v: Any) -> str:
    return f"{v / 1024:.1f} KB" if isinstance(v, (int, float)) else "-"


def render_markdown(rep: dict[str, Any]) -> str:
    lines = [f"# microfit report: {rep['run']}", ""]
    s = rep["settings"]
    lines.append(f"Model: `{s.get('model') or 'default digits CNN'}`, data: "
                 f"`{s.get('data') or 'scikit-learn digits'}`, target: `{s.get('target', '-')}`.")
    lines += ["", "| stage | params | MACs | test accuracy |", "|---|---:|---:|---:|"]
    for st in rep["stages"]:
        lines.append(f"| {st['stage']} | {_fmt_int(st['params'])} | {_fmt_int(st['macs'])} | "
                     f"{_fmt_pct(st['accuracy'])} |")
    d = rep.get("device") or {}
    if d:
        per = d.get("per_inference") or {}
        kind = d.get("counter_kind", "instructions")
        lines += ["", "## On the device", "",
                  f"- board: `{d.get('board')}` via `{d.get('port')}`, {d.get('samples')} test inputs",
                  f"- device output bytes equal to the numpy reference: "
                  f"{_fmt_pct(d.get('agreement'))}"
                  + (f" (differing samples: {d['mismatched_samples'][:20]})"
                     if d.get("mismatched_samples") else ""),
                  f"- {kind} per inference: median {_fmt_int(per.get('median'))}, min "
                  f"{_fmt_int(per.get('min'))}, p95 {_fmt_int(per.get('p95'))}, max "
                  f"{_fmt_int(per.get('max'))} (resolution +-{per.get('resolution', '-')})",
                  f"- {kind} per MAC: {d['per_mac']:.2f}" if d.get("per_mac") else f"- {kind} per MAC: -",
                  f"- serial retries: {d.get('retries', 0)}",
                  f"- note: {d.get('note')}"]
    m = rep.get("memory") or {}
    if m:
        lines += ["", "## Memory", "",
                  f"- flash: {_kb(m.get('flash_used'))} of {_kb(m.get('flash_limit'))}",
                  f"- RAM: {_kb(m.get('ram_used'))} of {_kb(m.get('ram_limit'))}",
                  f"- arena: {_fmt_int(m.get('arena'))} B (lower bound "
                  f"{_fmt_int(m.get('arena_lower_bound'))} B); weights and constants "
                  f"{_fmt_int(m.get('weights'))} B"]
    return "\n".join(lines) + "\n"


def write_report(run: RunFolder) -> dict[str, Any]:
    rep = build_report(run)
    run.write_json("report.json", rep)
    run.file("report.md").write_text(render_markdown(rep))
    return rep


def print_summary(rep: dict[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title=f"microfit: {rep['run']}")
    for col in ("stage", "params", "MACs", "test accuracy"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for st in rep["stages"]:
        t.add_row(st["stage"], _fmt_int(st["params"]), _fmt_int(st["macs"]), _fmt_pct(st["accuracy"]))
    console.print(t)
    d = rep.get("device") or {}
    m = rep.get("memory") or {}
    if m:
        console.print(f"flash {_kb(m.get('flash_used'))} / {_kb(m.get('flash_limit'))}, "
                      f"RAM {_kb(m.get('ram_used'))} / {_kb(m.get('ram_limit'))}, arena "
                      f"{_fmt_int(m.get('arena'))} B (lower bound {_fmt_int(m.get('arena_lower_bound'))} B)")
    if d:
        per = d.get("per_inference") or {}
        kind = d.get("counter_kind")
        console.print(f"device/reference byte agreement: {_fmt_pct(d.get('agreement'))} of "
                      f"{d.get('samples')} inputs; {kind} per inference (median) "
                      f"{_fmt_int(per.get('median'))}"
                      + (f", {d['per_mac']:.2f} per MAC" if d.get("per_mac") else ""))
        if d.get("note"):
            console.print(f"[dim]{d['note']}[/dim]")
