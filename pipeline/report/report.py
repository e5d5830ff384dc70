"""report.json, report.md, plots and the summary table, from the run folder's artifacts.

The report only restates what the stages measured and wrote; re-rendering it
(`microfit report RUN`) never re-runs anything. report.json is the source of
report.md and the plots: when it is newer than every artifact it is rendered
as it stands (so a report.json copied elsewhere renders too), otherwise it is
rebuilt from the artifacts first. Its schema is docs/report-schema.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..runfolder import RunFolder

SCHEMA_VERSION = 3

COUNTER_NOTE = {
    "instructions": ("QEMU counts executed instructions (-icount shift=0), not cycles: "
                     "a real Cortex-M takes a different number of cycles for the same code."),
    "cycles": "Cycles counted by the device's cycle counter at its clock.",
    "nanoseconds": ("Wall-clock nanoseconds of the host build (a PC process on a pseudo-terminal), "
                    "not a microcontroller's timing."),
}

# Artifacts the report is built from; a newer one makes report.json stale.
SOURCES = ("run.json", "train.json", "prune.json", "quantize.json", "generate.json", "build.json",
           "validate.json", "sweep.json")


def _opt(run: RunFolder, name: str) -> dict[str, Any] | None:
    p = run.file(name)
    if not p.exists():
        return None
    return json.loads(p.read_text())


def _layers(val: dict[str, Any], total: float | None) -> list[dict[str, Any]]:
    """Per-layer rows with their share of the whole inference."""
    rows = []
    for layer in val.get("layers") or []:
        name = str(layer.get("name", ""))
        op, _, node = name.partition(" ")
        rows.append({
            "index": layer.get("index"),
            "name": node or name,
            "op": op if node else None,
            "median": layer.get("median"),
            "min": layer.get("min"),
            "max": layer.get("max"),
            "share": (layer["median"] / total) if total and layer.get("median") is not None else None,
        })
    return rows


def build_report(run: RunFolder) -> dict[str, Any]:
    """Assemble report.json's content from the run folder's artifacts."""
    s = run.settings()
    train = _opt(run, "train.json") or {}
    prune = _opt(run, "prune.json") or {}
    quant = _opt(run, "quantize.json") or {}
    gen = _opt(run, "generate.json") or {}
    build = _opt(run, "build.json") or {}
    val = _opt(run, "validate.json") or {}
    sweep = _opt(run, "sweep.json")

    stats = val.get("counter_stats") or {}
    stages = []
    if prune:
        stages.append({"stage": "float", "params": prune["params_before"], "macs": prune["macs_before"],
                       "accuracy": prune["float_test_accuracy"],
                       "weight_bytes": 4 * prune["params_before"], "latency": None})
        stages.append({"stage": "pruned", "params": prune["params_after"], "macs": prune["macs_after"],
                       "accuracy": prune["pruned_test_accuracy"],
                       "weight_bytes": 4 * prune["params_after"], "latency": None})
    elif train:
        stages.append({"stage": "float", "params": quant.get("params"), "macs": quant.get("macs"),
                       "accuracy": train["test_accuracy"],
                       "weight_bytes": 4 * quant["params"] if quant.get("params") else None,
                       "latency": None})
    if quant:
        stages.append({"stage": "int8 (reference)", "params": quant["params"], "macs": quant["macs"],
                       "accuracy": quant["int8_test_accuracy"],
                       "weight_bytes": gen.get("weight_bytes"), "latency": None})
    if val:
        samples = val.get("samples")
        if quant and val.get("reference_accuracy") is not None and samples != quant.get("test_samples"):
            # --limit: show the reference on the same subset, so the rows compare like with like.
            stages.append({"stage": f"int8 (reference, same {samples})", "params": quant["params"],
                           "macs": quant["macs"], "accuracy": val["reference_accuracy"],
                           "weight_bytes": gen.get("weight_bytes"), "latency": None})
        stages.append({"stage": "int8 (device)", "params": quant.get("params"),
                       "macs": quant.get("macs"), "accuracy": val.get("accuracy"),
                       "weight_bytes": gen.get("weight_bytes"), "latency": stats.get("median"),
                       "flash": build.get("flash_bytes")})

    device: dict[str, Any] = {}
    if val:
        counter = val.get("counter_kind") or val.get("device", {}).get("counter_kind", "instructions")
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
            "clock_hz": val.get("clock_hz") or val.get("device", {}).get("clock_hz"),
            "latency_us": val.get("latency_us"),
            "throughput": val.get("throughput"),
            "link": val.get("link") or {},
            "layers": _layers(val, median),
            "confusion": val.get("confusion"),
            "per_class_accuracy": val.get("per_class_accuracy"),
            "model_hash": val.get("model_hash"),
        }
    memory = {}
    if build or gen:
        memory = {
            "flash_used": build.get("flash_bytes"), "flash_limit": build.get("flash_limit"),
            "ram_used": build.get("ram_bytes"), "ram_limit": build.get("ram_limit"),
            "arena": gen.get("arena_size"), "arena_lower_bound": gen.get("arena_lower_bound"),
            "sum_of_tensors": gen.get("sum_of_tensors"),
            # Measured at generate time (codegen.tflm): a generate.json without it predates it.
            "tflm_arena": gen.get("tflm_arena") or {
                "head": None, "total": None, "host": None, "tflite_micro": None,
                "reason": "not measured: generate.json predates it; re-run `microfit generate`"},
            "weights": gen.get("weight_bytes"),
            # From the linker map at build time (stages._code_bytes); absent before a build.
            "code_bytes": build.get("code_bytes"),
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
        "sweep": (sweep or {}).get("points") or [],
        "weight_storage": gen.get("sparse_layers") or [],
        "plots": {},
    }


# ------------------------------------------------------------------ formatting


def _fmt_int(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "-"
    return f"{round(v):,}"


def _fmt_pct(v: Any) -> str:
    return f"{100 * v:.2f}%" if isinstance(v, (int, float)) else "-"


def _kb(v: Any) -> str:
    return f"{v / 1024:.1f} KB" if isinstance(v, (int, float)) else "-"


def _fmt_f(v: Any, digits: int = 1) -> str:
    return f"{v:,.{digits}f}" if isinstance(v, (int, float)) else "-"


def _device_lines(d: dict[str, Any]) -> list[str]:
    per = d.get("per_inference") or {}
    kind = d.get("counter_kind", "instructions")
    lines = ["", "## On the device", "",
             f"- board: `{d.get('board')}` via `{d.get('port')}`, {d.get('samples')} test inputs",
             f"- device output bytes equal to the numpy reference: "
             f"{_fmt_pct(d.get('agreement'))}"
             + (f" (differing samples: {d['mismatched_samples'][:20]})"
                if d.get("mismatched_samples") else ""),
             f"- {kind} per inference: median {_fmt_int(per.get('median'))}, min "
             f"{_fmt_int(per.get('min'))}, p95 {_fmt_int(per.get('p95'))}, max "
             f"{_fmt_int(per.get('max'))} (resolution +-{per.get('resolution', '-')})",
             f"- {kind} per MAC: {d['per_mac']:.2f}" if d.get("per_mac") else f"- {kind} per MAC: -"]
    us = d.get("latency_us")
    clock = d.get("clock_hz")
    if us:
        lines.append(f"- latency at {clock / 1e6:g} MHz: median {_fmt_f(us.get('median'))} us, min "
                     f"{_fmt_f(us.get('min'))}, p95 {_fmt_f(us.get('p95'))}, max {_fmt_f(us.get('max'))} us"
                     if clock else
                     f"- latency: median {_fmt_f(us.get('median'))} us")
    elif kind == "instructions":
        lines.append("- latency in microseconds: not given (instructions are not time)")
    tp = d.get("throughput") or {}
    if tp.get("samples_per_s"):
        limit = tp.get("line_limit_samples_per_s")
        lines.append(f"- throughput: {_fmt_f(tp['samples_per_s'])} samples/s, "
                     f"{_fmt_f(tp.get('wire_bytes_per_sample'), 0)} bytes on the wire per sample"
                     + (f"; a {tp.get('baud')}-baud line carries at most {_fmt_f(limit)} samples/s"
                        if limit else ""))
    link = d.get("link") or {}
    lines.append(f"- serial retries: {d.get('retries', 0)}"
                 + (f" (corrupt replies {link.get('crc_errors', 0)}, unreadable requests "
                    f"{link.get('device_link_errors', 0)}, timeouts {link.get('timeouts', 0)}, "
                    f"redone inferences {link.get('input_crc_mismatches', 0) + link.get('stale_runs', 0) + link.get('output_crc_mismatches', 0)}, "
                    f"device resets {link.get('resets', 0)})" if link else ""))
    lines.append(f"- note: {d.get('note')}")
    layers = d.get("layers") or []
    if layers:
        lines += ["", f"### Per layer ({kind}, median)", "",
                  f"| # | layer | op | {kind} | share |", "|---:|---|---|---:|---:|"]
        for row in layers:
            lines.append(f"| {row['index']} | {row['name']} | {row.get('op') or '-'} | "
                         f"{_fmt_int(row.get('median'))} | {_fmt_pct(row.get('share'))} |")
    confusion = d.get("confusion")
    if confusion:
        n = len(confusion)
        lines += ["", "### Confusion matrix (rows: true class, columns: device's top-1)", "",
                  "| true \\ predicted | " + " | ".join(str(c) for c in range(n)) + " | accuracy |",
                  "|---" * (n + 2) + "|"]
        per_class = d.get("per_class_accuracy") or [None] * n
        for c, row in enumerate(confusion):
            lines.append(f"| {c} | " + " | ".join(str(v) for v in row) + f" | {_fmt_pct(per_class[c])} |")
    return lines


def _tflm_text(t: dict[str, Any] | None) -> str:
    """TFLite Micro's arena for the same .tflite, or why there is no number."""
    if not t:
        return "not measured"
    if t.get("head") is None:
        return f"no figure: {t.get('reason') or 'not measured'}"
    return (f"{_fmt_int(t['head'])} B of activations (its arena head), {_fmt_int(t.get('total'))} B "
            f"with the interpreter's own structures; its interpreter ran on the generating host "
            f"({t.get('host')}), whose pointers make those structures larger than on a "
            f"32-bit MCU")


def _arena_lines(m: dict[str, Any]) -> list[str]:
    """The arena beside its lower bound, the sum of all tensors and TFLite Micro's arena."""
    return [f"- arena: {_fmt_int(m.get('arena'))} B; lower bound {_fmt_int(m.get('arena_lower_bound'))} B "
            f"(the most bytes alive at one step); sum of all tensors "
            f"{_fmt_int(m.get('sum_of_tensors'))} B (no reuse)",
            f"- TFLite Micro, same model as .tflite: {_tflm_text(m.get('tflm_arena'))}",
            f"- weights and constants: {_fmt_int(m.get('weights'))} B", *_code_lines(m.get("code_bytes"))]


def _code_lines(c: dict[str, Any] | None) -> list[str]:
    """Linked flash by origin: the runtime's kernels apart from the model and its weights."""
    if not c:
        return []
    if c.get("reason"):
        return [f"- linked code by origin: not measured ({c['reason']})"]
    kernels = ", ".join(f"{k} {_fmt_int(v)}" for k, v in
                        sorted((c.get("runtime_by_object") or {}).items(), key=lambda kv: -kv[1]))
    return [f"- linked (after --gc-sections): runtime kernels {_fmt_int(c.get('runtime'))} B "
            f"({kernels}), model code {_fmt_int(c.get('model'))} B, weights "
            f"{_fmt_int(c.get('weights'))} B"]


def render_markdown(rep: dict[str, Any]) -> str:
    """report.md from report.json's content."""
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
        lines += _device_lines(d)
    m = rep.get("memory") or {}
    if m:
        lines += ["", "## Memory", ""]
        if m.get("flash_used") is not None or m.get("ram_used") is not None:
            lines += [f"- flash: {_kb(m.get('flash_used'))} of {_kb(m.get('flash_limit'))}",
                      f"- RAM: {_kb(m.get('ram_used'))} of {_kb(m.get('ram_limit'))}"]
        lines += _arena_lines(m)
    storage = rep.get("weight_storage") or []
    if storage:
        # Per layer: the format codegen stored, in bytes (weights + indices), and why.
        lines += ["", "## Weight storage", "", "| layer | stored as | bytes | dense bytes | why |",
                  "|---|---|---:|---:|---|"]
        lines += [f"| {r['layer']} | {r['format']} | {_fmt_int(r['bytes_chosen'])} | "
                  f"{_fmt_int(r['bytes_dense'])} | {r['reason']} |" for r in storage]
    plots = rep.get("plots") or {}
    if plots:
        lines += ["", "## Plots", ""]
        for name, path in plots.items():
            lines.append(f"![{name}]({path})")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ writing


def report_is_current(run: RunFolder) -> bool:
    """True when report.json exists and no artifact it is built from is newer."""
    rep = run.file("report.json")
    if not rep.exists():
        return False
    built = rep.stat().st_mtime
    return all(not run.file(n).exists() or run.file(n).stat().st_mtime <= built for n in SOURCES)


def write_report(run: RunFolder, rebuild: bool = True, plots: bool = True) -> dict[str, Any]:
    """Write report.json (unless re-rendering a current one), report.md and the plots.

    With `rebuild` False, an existing, current report.json is rendered as it
    is; otherwise it is built from the artifacts first.
    """
    if not rebuild and run.file("report.json").exists() and report_is_current(run):
        rep = json.loads(run.file("report.json").read_text())
    else:
        rep = build_report(run)
    if plots:
        from .plots import render_plots

        rep["plots"] = render_plots(rep, run.path)
    run.write_json("report.json", rep)
    run.file("report.md").write_text(render_markdown(rep))
    return rep


def print_summary(rep: dict[str, Any], console: Any = None) -> None:
    """The end-of-run table and the device's key figures, on the console."""
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
                      f"{_fmt_int(m.get('arena'))} B (lower bound {_fmt_int(m.get('arena_lower_bound'))} B, "
                      f"all tensors {_fmt_int(m.get('sum_of_tensors'))} B, TFLite Micro's "
                      + (f"{_fmt_int(m['tflm_arena']['head'])} B on {m['tflm_arena'].get('host')})"
                         if (m.get("tflm_arena") or {}).get("head") is not None else "-)"))
    if d:
        per = d.get("per_inference") or {}
        kind = d.get("counter_kind")
        console.print(f"device/reference byte agreement: {_fmt_pct(d.get('agreement'))} of "
                      f"{d.get('samples')} inputs; {kind} per inference (median) "
                      f"{_fmt_int(per.get('median'))}"
                      + (f", {d['per_mac']:.2f} per MAC" if d.get("per_mac") else ""))
        tp = d.get("throughput") or {}
        if tp.get("samples_per_s"):
            limit = tp.get("line_limit_samples_per_s")
            console.print(f"throughput {_fmt_f(tp['samples_per_s'])} samples/s"
                          + (f" (line limit at {tp.get('baud')} baud: {_fmt_f(limit)})" if limit else "")
                          + f"; serial retries {d.get('retries', 0)}")
        if d.get("note"):
            console.print(f"[dim]{d['note']}[/dim]")


def report_path(run: RunFolder) -> Path:
    """Where report.md is written."""
    return run.file("report.md")
