"""Turn a board file plus generated model sources into a buildable project.

The project is a plain folder with a Makefile: users can rebuild, debug or
change it without microfit. Layout (every folder a -I include path):

    Makefile, link.ld        rendered from the family template
    model/                   the generated model (model.h, model.c, ...)
    runtime/                 kernel headers and sources (firmware_templates/runtime)
    protocol/                serial protocol shared by all boards (firmware_templates/common)
    platform/                the board family's startup, HAL and main
    microfit-project.json    which board and files this project was rendered from

Rendering is deterministic: the same board and model give the same bytes, and
re-rendering into the same folder replaces what an earlier render wrote.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2

from microfit.errors import BoardNotFoundError, RunFolderError
from microfit.target.boards import Board

MANIFEST = "microfit-project.json"
# Everything a render owns inside the project folder; removed before a render
# so files of an earlier model cannot linger.
_MANAGED_DIRS = ("model", "runtime", "protocol", "platform", "build", "tools")
_MANAGED_FILES = ("Makefile", "link.ld", "firmware.elf", "firmware.bin", "firmware.hex",
                  "firmware.uf2", "firmware.map", MANIFEST)
_SOURCE_SUFFIXES = (".c", ".h")
# Family-template folder whose contents a board picks by value (see _selected).
SELECT_DIR = "select"
_COUNTER_KIND_CODES = {"cycles": 0, "instructions": 1, "nanoseconds": 2}
# Families built without a rendered Makefile: the host board is compiled by
# microfit.harness.hostdev from the model sources alone.
_NO_TEMPLATE_FAMILIES = ("host",)


@dataclass(frozen=True)
class _Template:
    text: str


def _templates_root() -> Traversable:
    return resources.files("microfit.firmware_templates")


def _walk(node: Traversable, prefix: PurePosixPath) -> list[tuple[PurePosixPath, Traversable]]:
    """All files below `node`, with their path relative to it, sorted."""
    found: list[tuple[PurePosixPath, Traversable]] = []
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.name.startswith((".", "__")):
            continue
        rel = prefix / child.name
        if child.is_dir():
            found.extend(_walk(child, rel))
        else:
            found.append((rel, child))
    return found


def _add(plan: dict[PurePosixPath, bytes | _Template], rel: PurePosixPath, node: Traversable) -> None:
    if rel.suffix == ".j2":
        plan[rel.with_suffix("")] = _Template(node.read_text(encoding="utf-8"))
    else:
        plan[rel] = node.read_bytes()


def _plan_model(model_dir: Path, plan: dict[PurePosixPath, bytes | _Template]) -> None:
    if not (model_dir / "model.h").is_file():
        raise RunFolderError(
            f"{model_dir} has no model.h: generate the model sources first (microfit generate)"
        )
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and path.suffix in _SOURCE_SUFFIXES:
            plan[PurePosixPath("model", path.name)] = path.read_bytes()


def _plan_runtime(root: Traversable, plan: dict[PurePosixPath, bytes | _Template]) -> None:
    runtime = root / "runtime"
    for sub, suffix in (("include", ".h"), ("src", ".c")):
        folder = runtime / sub
        if not folder.is_dir():
            continue
        for child in sorted(folder.iterdir(), key=lambda c: c.name):
            if child.is_file() and child.name.endswith(suffix):
                plan[PurePosixPath("runtime", child.name)] = child.read_bytes()


def _board_value(board: Board, dotted: str) -> Any:
    value: Any = board.raw
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _selected(board: Board, family: Traversable) -> list[tuple[PurePosixPath, Traversable]]:
    """Template files chosen by the board file's values.

    `select/<key>/<value>/...` in a family template (key a dotted board-file
    key such as `uart.kind`) is copied, with the layout below <value>, when
    the board file sets that key to that value. That is how one family
    template holds a UART driver per MCU family, or the RP2040's boot stage,
    and a board picks its own by data alone.
    """
    select = family / SELECT_DIR
    if not select.is_dir():
        return []
    found: list[tuple[PurePosixPath, Traversable]] = []
    for key_dir in sorted(select.iterdir(), key=lambda c: c.name):
        value = _board_value(board, key_dir.name)
        if value is None or not key_dir.is_dir():
            continue
        choice = key_dir / str(value)
        if not choice.is_dir():
            known = ", ".join(sorted(c.name for c in key_dir.iterdir() if c.is_dir()))
            raise BoardNotFoundError(
                f"board {board.name} sets {key_dir.name} = '{value}', which the {board.family} "
                f"template does not support (it knows: {known})"
            )
        found.extend(_walk(choice, PurePosixPath(".")))
    return found


def _context(board: Board, plan: dict[PurePosixPath, bytes | _Template]) -> dict[str, Any]:
    sources = sorted(str(p) for p in plan if p.suffix == ".c")
    include_dirs = sorted({str(p.parent) for p in plan if p.suffix == ".h"})
    return {
        "board": board,
        "irq_count": int(board.raw.get("irq_count", 32)),
        "counter_kind_code": _COUNTER_KIND_CODES[board.counter.kind],
        "sources": sources,
        "include_dirs": include_dirs,
    }


def _clean(out_dir: Path) -> None:
    for name in _MANAGED_DIRS:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
    for name in _MANAGED_FILES:
        (out_dir / name).unlink(missing_ok=True)


def render_project(board: Board, model_dir: Path, out_dir: Path) -> Path:
    """Write a complete firmware project for `board` around the model in `model_dir`.

    Returns `out_dir`. Raises RunFolderError when the model sources are missing
    and BoardNotFoundError when no template exists for the board's family.
    """
    model_dir = Path(model_dir)
    out_dir = Path(out_dir)
    root = _templates_root()
    family = root / board.family
    if board.family in _NO_TEMPLATE_FAMILIES:
        return _render_model_only(board, model_dir, out_dir)
    if not family.is_dir():
        raise BoardNotFoundError(
            f"board {board.name} belongs to family '{board.family}', which has no firmware "
            "template in microfit/firmware_templates"
        )

    plan: dict[PurePosixPath, bytes | _Template] = {}
    _plan_model(model_dir, plan)
    _plan_runtime(root, plan)
    for rel, node in _walk(root / "common", PurePosixPath("protocol")):
        _add(plan, rel, node)
    for rel, node in _walk(family, PurePosixPath(".")):
        if rel.parts[0] != SELECT_DIR:
            _add(plan, rel, node)
    for rel, node in _selected(board, family):
        _add(plan, rel, node)

    context = _context(board, plan)
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    files: dict[PurePosixPath, bytes] = {}
    for rel, content in plan.items():
        if isinstance(content, _Template):
            text = env.from_string(content.text).render(**context)
            files[rel] = text.encode("utf-8")
        else:
            files[rel] = content

    return _write(out_dir, board, files)


def _write(out_dir: Path, board: Board, files: dict[PurePosixPath, bytes]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    _clean(out_dir)
    for rel, data in sorted(files.items()):
        dest = out_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    manifest = {
        "board": board.name,
        "family": board.family,
        "files": {str(rel): hashlib.sha256(data).hexdigest() for rel, data in sorted(files.items())},
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out_dir


def _render_model_only(board: Board, model_dir: Path, out_dir: Path) -> Path:
    """The host board's project: the model sources and a manifest, nothing to render."""
    plan: dict[PurePosixPath, bytes | _Template] = {}
    _plan_model(model_dir, plan)
    files = {rel: data for rel, data in plan.items() if isinstance(data, bytes)}
    return _write(out_dir, board, files)


def read_manifest(project_dir: Path) -> dict[str, Any] | None:
    """The render manifest of a project folder, or None for a hand-made folder."""
    path = Path(project_dir) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text())
