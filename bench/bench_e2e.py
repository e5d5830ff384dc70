"""The default job end to end on QEMU mps2-an386: accuracy per stage, agreement, size, instructions."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from microfit.cli import main as microfit

from .common import BenchResult


def run(quick: bool = False) -> BenchResult:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        args = ["-q", "run", "--out", str(out)]
        if quick:
            args += ["--epochs", "5", "--finetune-epochs", "3", "--limit", "50"]
        t0 = time.time()
        code = microfit(args)
        wall = time.time() - t0
        if code != 0:
            raise SystemExit(f"microfit run failed with exit code {code}")
        rep = json.loads((out / "report.json").read_text())
    rows = [dict(stage=s["stage"], params=s["params"], macs=s["macs"], accuracy=s["accuracy"])
            for s in rep["stages"]]
    d, m = rep["device"], rep["memory"]
    notes = [
        f"wall time of `microfit run` (set-up done): {wall:.1f} s",
        f"device/reference agreement {d['agreement']:.2%} on {d['samples']} inputs",
        f"instructions per inference (QEMU icount, median): {d['per_inference']['median']:,.0f}; "
        f"per MAC {d['per_mac']:.2f}",
        f"flash {m['flash_used']:,} B, RAM {m['ram_used']:,} B, arena {m['arena']:,} B "
        f"(lower bound {m['arena_lower_bound']:,} B)",
    ]
    return BenchResult("e2e", "Default job on qemu-mps2-an386", ["stage", "params", "macs", "accuracy"],
                       rows, notes)
