"""The run folder: where every stage reads its input and writes its artifact.

Stages never call each other's internals; they meet here, through files with
fixed names, so any stage can be re-run alone and every artifact inspected.

    run.json            the run's settings (model, data, target, seed, options)
    data.npz            the seeded train / validation / test split
    float.pt            trained float model (state_dict)
    train.json          training history and float accuracy
    pruned.pt           pruned, fine-tuned model (state_dict of the smaller model)
    prune_plan.json     kept channel indices per pruned layer
    prune.json          MACs, params and accuracy before and after pruning
    float.onnx          ONNX export of the pruned model
    qat.pt, qat.onnx    the pruned model after quantization-aware fine-tuning (quantize --qat)
    quant.json/.npz     the int8 IR (structure + constants)
    quantize.json       calibration, int8 reference accuracy
    generated/          model.h, model.c, model_weights.c, memory_plan.json
    firmware/           the buildable project and firmware.elf
    build.json          flash / RAM from the ELF, fit against the board
    validate.json       device results: outputs, agreement, instructions
    report.json/.md     the summary
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import RunFolderError

ARTIFACT_PRODUCERS = {
    "data.npz": "microfit train",
    "float.pt": "microfit train",
    "train.json": "microfit train",
    "pruned.pt": "microfit prune",
    "prune_plan.json": "microfit prune",
    "prune.json": "microfit prune",
    "float.onnx": "microfit prune",
    "quant.json": "microfit quantize",
    "quantize.json": "microfit quantize",
    "generated": "microfit generate",
    "build.json": "microfit build",
    "firmware": "microfit build",
    "validate.json": "microfit validate",
}


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def ensure(self) -> RunFolder:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def file(self, name: str) -> Path:
        return self.path / name

    def need(self, name: str) -> Path:
        """Path of an artifact that must already exist, or a clear error saying which verb makes it."""
        p = self.path / name
        if not p.exists():
            maker = ARTIFACT_PRODUCERS.get(name, "an earlier stage")
            raise RunFolderError(
                f"{p} is missing: run `{maker} {self.path}` first (or `microfit run`)")
        return p

    def read_json(self, name: str) -> dict[str, Any]:
        return json.loads(self.need(name).read_text())

    def write_json(self, name: str, data: dict[str, Any]) -> Path:
        p = self.path / name
        p.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")
        return p

    def settings(self) -> dict[str, Any]:
        p = self.path / "run.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def update_settings(self, **kw: Any) -> dict[str, Any]:
        s = self.settings()
        s.update({k: v for k, v in kw.items() if v is not None})
        self.ensure().write_json("run.json", s)
        return s


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
