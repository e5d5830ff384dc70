"""How many bytes of a linked firmware are the runtime, the model code and the weights.

A GNU ld map file (``-Wl,-Map,firmware.map``; microfit's Cortex-M Makefile
writes one) lists every input section that survived ``--gc-sections`` with its
size and the object it came from. Summing by object separates the C runtime's
kernels (``runtime/*.c``) from the generated model (``model.c``: the invoke
function and its parameter structs; ``model_weights.c``: the constant arrays)
and from everything else (start-up code, serial protocol, libc).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..toolchain.host import runtime_sources

# An input section: " .text.name  0xADDR  0xSIZE  object" (name and the rest may
# be split over two lines when the name is long).
_SECTION_RE = re.compile(r"^ (\.[^\s*]+)?\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)\s+(\S.*)$")
_NAME_ONLY_RE = re.compile(r"^ (\.\S+)$")


@dataclass
class CodeSize:
    """Bytes per object of a linked image (code = .text + .rodata, data = .data, bss = .bss)."""

    by_object: dict[str, dict[str, int]] = field(default_factory=dict)

    def total(self, objects: set[str], kind: str = "code") -> int:
        return sum(v.get(kind, 0) for k, v in self.by_object.items() if k in objects)

    @property
    def runtime_code(self) -> int:
        """Code and constants of the kernels that were linked (unused ones are collected)."""
        return self.total({s.stem for s in runtime_sources()})

    @property
    def model_code(self) -> int:
        """model_invoke and its constant parameter structs."""
        return self.total({"model"})

    @property
    def weights(self) -> int:
        """Weights, biases, requantization constants (model_weights.c)."""
        return self.total({"model_weights"})

    def runtime_functions(self) -> dict[str, int]:
        """Per runtime object, its code bytes (only objects that contributed any)."""
        names = {s.stem for s in runtime_sources()}
        return {k: v["code"] for k, v in sorted(self.by_object.items())
                if k in names and v.get("code")}


def _kind(section: str) -> str | None:
    if section.startswith((".text", ".rodata", ".progmem")):  # .progmem: AVR's flash constants
        return "code"
    if section.startswith(".data"):
        return "data"
    if section.startswith((".bss", "COMMON")):
        return "bss"
    return None


def code_size_from_map(map_file: Path) -> CodeSize:
    """Parse a GNU ld map file into bytes per object (by file stem: ``conv2d_s8_fast``)."""
    lines = Path(map_file).read_text(errors="replace").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("Linker script and memory map"))
    except StopIteration:
        raise ValueError(f"{map_file} is not a GNU ld map file") from None
    out = CodeSize()
    pending: str | None = None
    for line in lines[start:]:
        m = _NAME_ONLY_RE.match(line)
        if m:
            pending = m.group(1)
            continue
        m = _SECTION_RE.match(line)
        if m:
            section = m.group(1) or pending
            pending = None
            if section is None:
                continue
            kind = _kind(section)
            size = int(m.group(3), 16)
            obj = m.group(4).strip()
            if kind is None or size == 0 or not obj.endswith(".o"):
                continue
            stem = Path(obj.split("(")[0]).stem
            entry = out.by_object.setdefault(stem, {})
            entry[kind] = entry.get(kind, 0) + size
        else:
            pending = None
    return out
