"""What every benchmark returns and how it is written."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class BenchResult:
    name: str
    title: str
    columns: list[str]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        head = "| " + " | ".join(self.columns) + " |"
        sep = "|" + "|".join("---" for _ in self.columns) + "|"
        body = ["| " + " | ".join(_fmt(r.get(c)) for c in self.columns) + " |" for r in self.rows]
        notes = [f"- {n}" for n in self.notes]
        return "\n".join([f"## {self.title}", "", head, sep, *body, "", *notes]) + "\n"

    def write(self, out_dir: Path = RESULTS) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        meta = {"machine": platform.machine(), "python": platform.python_version(),
                "date": time.strftime("%Y-%m-%d %H:%M:%S")}
        (out_dir / f"{self.name}.json").write_text(json.dumps(
            {"name": self.name, "title": self.title, "meta": meta, "columns": self.columns,
             "rows": self.rows, "notes": self.notes}, indent=2, default=str) + "\n")
        p = out_dir / f"{self.name}.md"
        p.write_text(self.markdown())
        return p


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
