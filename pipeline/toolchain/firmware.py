"""Cross-compile a rendered project and measure what it needs on the board.

The build runs the project's own Makefile, so what microfit builds is exactly
what a user gets with `make` in that folder. Sizes come from the ELF
(pyelftools), not from the compiler's text output: flash is the load image
(code, constants, initial values of .data), RAM is .data + .bss + stack. A
firmware that does not fit raises FitError with the numbers, whether the
linker caught it (regions carry the board's real sizes) or the ELF check did.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile

from microfit.errors import BuildError, FitError, ToolchainMissingError
from microfit.target.boards import Board
from microfit.target.project import read_manifest

# Names the model's arena may have in the ELF, most specific first.
ARENA_SYMBOLS = ("model_arena", "mf_arena", "arena")
_OVERFLOW_RE = re.compile(r"region [`']?(\w+)'? overflowed by (\d+) bytes")
_REGION_NAMES = {"FLASH": "flash", "ROM": "flash", "TEXT": "flash", "RAM": "ram", "DATA": "ram"}


@dataclass
class BuildResult:
    """A built firmware and what it occupies."""

    elf: Path
    board: str
    flash_bytes: int
    ram_bytes: int
    stack_bytes: int
    arena_bytes: int | None
    flash_capacity: int
    ram_capacity: int
    sections: dict[str, int] = field(default_factory=dict)
    build_time_s: float = 0.0
    log: str = field(default="", repr=False)

    @property
    def flash_free(self) -> int:
        """Flash bytes left on the board."""
        return self.flash_capacity - self.flash_bytes

    @property
    def ram_free(self) -> int:
        """RAM bytes left on the board."""
        return self.ram_capacity - self.ram_bytes

    def summary(self) -> str:
        """One line for the console."""
        arena = f", arena {format_bytes(self.arena_bytes)}" if self.arena_bytes is not None else ""
        return (
            f"{self.board}: flash {format_bytes(self.flash_bytes)} of {format_bytes(self.flash_capacity)}, "
            f"RAM {format_bytes(self.ram_bytes)} of {format_bytes(self.ram_capacity)} "
            f"(stack {format_bytes(self.stack_bytes)}{arena})"
        )

    def to_json(self) -> dict[str, Any]:
        """Alias of to_dict: the name the stages look for."""
        return self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for report.json."""
        return {
            "elf": str(self.elf),
            "board": self.board,
            "flash_bytes": self.flash_bytes,
            "ram_bytes": self.ram_bytes,
            "stack_bytes": self.stack_bytes,
            "arena_bytes": self.arena_bytes,
            "flash_limit": self.flash_capacity,
            "ram_limit": self.ram_capacity,
            "sections": dict(self.sections),
            "build_time_s": self.build_time_s,
        }


def format_bytes(n: int) -> str:
    """Bytes as a short human figure: 512 B, 88 KB, 1.5 MB (1 KB = 1024 B)."""
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        kb = n / 1024
        return f"{kb:.0f} KB" if kb >= 100 or kb == int(kb) else f"{kb:.1f} KB"
    mb = n / (1024 * 1024)
    return f"{mb:.0f} MB" if mb == int(mb) else f"{mb:.2f} MB"


def _overshoot(kind: str, need: int, have: int, board: Board) -> str:
    return (
        f"needs {format_bytes(need)} {kind}, board {board.name} has {format_bytes(have)}: "
        f"{format_bytes(need - have)} over ({need:,} > {have:,} bytes)"
    )


def check_fit(flash_bytes: int, ram_bytes: int, board: Board) -> None:
    """Raise FitError naming every budget the firmware exceeds, with numbers."""
    problems = []
    if flash_bytes > board.flash.size:
        problems.append(_overshoot("flash", flash_bytes, board.flash.size, board))
    if ram_bytes > board.ram.size:
        problems.append(_overshoot("RAM", ram_bytes, board.ram.size, board))
    if problems:
        raise FitError("firmware " + "; ".join(problems))


def require_toolchain(board: Board) -> str:
    """Path of the board's C compiler; ToolchainMissingError naming the packages if absent."""
    found = shutil.which(board.toolchain.cc)
    if found is None:
        packages = " ".join(board.toolchain.apt) or board.toolchain.cc
        raise ToolchainMissingError(
            f"{board.toolchain.cc} not found on PATH; it is needed to build for {board.name}. "
            f"Install it: sudo apt-get install -y --no-install-recommends {packages} "
            "(or run `make toolchains` in the microfit repository)"
        )
    if shutil.which("make") is None:
        raise ToolchainMissingError(
            "make not found on PATH; it runs the generated project's Makefile. "
            "Install it: sudo apt-get install -y make"
        )
    return found


def _section_lma(elf: ELFFile, section: Any) -> int:
    """Load address of a section (where its bytes sit in flash)."""
    for segment in elf.iter_segments():
        if segment["p_type"] == "PT_LOAD" and segment.section_in_segment(section):
            return section["sh_addr"] - segment["p_vaddr"] + segment["p_paddr"]
    return section["sh_addr"]


def measure_elf(elf_path: Path, board: Board) -> dict[str, Any]:
    """Flash, RAM, stack and arena bytes of an ELF, placed by the board's memory map."""
    flash = ram = stack = 0
    sections: dict[str, int] = {}
    arena: int | None = None
    with open(elf_path, "rb") as handle:
        elf = ELFFile(handle)
        for section in elf.iter_sections():
            if not section["sh_flags"] & SH_FLAGS.SHF_ALLOC or section["sh_size"] == 0:
                continue
            size = int(section["sh_size"])
            sections[section.name] = size
            if section["sh_type"] != "SHT_NOBITS" and board.flash.contains(_section_lma(elf, section)):
                flash += size
            if board.ram.contains(section["sh_addr"]):
                ram += size
            if section.name in (".stack", "._stack"):
                stack += size
        if stack == 0:
            # No stack section (AVR: the stack grows down from the top of RAM
            # into whatever .data and .bss leave): reserve the board's stack
            # budget, so a firmware that leaves the stack no room fails here.
            stack = board.stack_size
            ram += stack
        symtab = elf.get_section_by_name(".symtab")
        if symtab is not None:
            for name in ARENA_SYMBOLS:
                symbols = symtab.get_symbol_by_name(name)
                if symbols:
                    arena = int(symbols[0]["st_size"])
                    break
    return {"flash": flash, "ram": ram, "stack": stack, "arena": arena, "sections": sections}


# avr-ld names the end address of a section that leaves its region instead of
# an overshoot (the RAM region comes from the MCU's device specs).
_AVR_OUTSIDE_RE = re.compile(r"address (0x[0-9a-fA-F]+) of \S+ section [`']\.(?:data|bss|noinit)' "
                             r"is not within region [`']data'")


def _ram_hint(project_dir: Path) -> str:
    """What to do about a RAM overshoot, naming the model's arena when known."""
    header = project_dir / "model" / "model.h"
    arena = None
    if header.is_file():
        found = re.search(r"#define\s+MODEL_ARENA_SIZE\s+(\d+)", header.read_text(errors="replace"))
        arena = int(found.group(1)) if found else None
    what = f"the model's activation arena alone takes {arena:,} bytes. " if arena else ""
    return (
        f" ({what}Prune harder, e.g. `microfit prune RUN --mac-ratio 0.25`, then generate and "
        "build again, or pick a board with more RAM: `microfit targets`)"
    )


def _linker_overflow(output: str, board: Board, project_dir: Path | None = None) -> FitError | None:
    problems = []
    ends = [int(a, 16) for a in _AVR_OUTSIDE_RE.findall(output)]
    if ends:
        # Past .data/.bss sits the stack the board file reserves.
        need = max(ends) - board.ram.origin + board.stack_size
        problems.append(
            _overshoot("RAM", need, board.ram.size, board)
            + f", of which {board.stack_size:,} bytes are the stack reserve"
            + (_ram_hint(project_dir) if project_dir is not None else "")
        )
    for region, over in _OVERFLOW_RE.findall(output):
        kind = _REGION_NAMES.get(region.upper(), region)
        have = board.flash.size if kind == "flash" else board.ram.size if kind == "ram" else 0
        if have:
            problems.append(_overshoot(kind if kind == "flash" else "RAM", have + int(over), have, board))
        else:
            problems.append(f"linker region {region} overflowed by {int(over):,} bytes")
    if not problems:
        return None
    return FitError("firmware " + "; ".join(dict.fromkeys(problems)))


def _build_host(project_dir: Path, board: Board) -> BuildResult:
    """The host board: model + protocol compiled by gcc into a pty device program.

    Flash and RAM of a PC process mean little; they are reported from the
    ELF's read-only and writable sections so the report has the same shape.
    """
    from microfit.harness.hostdev import build_host_device
    from microfit.toolchain.host import find_host_compiler

    find_host_compiler()
    started = time.perf_counter()
    exe = build_host_device(project_dir / "model", project_dir / "firmware.elf")
    flash = ram = 0
    sections: dict[str, int] = {}
    arena: int | None = None
    with open(exe, "rb") as handle:
        elf = ELFFile(handle)
        for section in elf.iter_sections():
            if not section["sh_flags"] & SH_FLAGS.SHF_ALLOC or section["sh_size"] == 0:
                continue
            size = int(section["sh_size"])
            sections[section.name] = size
            if section["sh_type"] != "SHT_NOBITS":
                flash += size
            if section["sh_flags"] & SH_FLAGS.SHF_WRITE:
                ram += size
        symtab = elf.get_section_by_name(".symtab")
        found = symtab.get_symbol_by_name("model_arena") if symtab is not None else None
        arena = int(found[0]["st_size"]) if found else None
    return BuildResult(
        elf=exe, board=board.name, flash_bytes=flash, ram_bytes=ram, stack_bytes=0,
        arena_bytes=arena, flash_capacity=board.flash.size, ram_capacity=board.ram.size,
        sections=sections, build_time_s=time.perf_counter() - started,
    )


def build_firmware(project_dir: Path, board: Board, jobs: int | None = None) -> BuildResult:
    """Build `project_dir` (from render_project) for `board`, measure it, check it fits.

    Raises ToolchainMissingError, BuildError (with the compiler's output) or
    FitError (with the sizes and the overshoot).
    """
    project_dir = Path(project_dir)
    manifest = read_manifest(project_dir)
    if manifest is not None and manifest.get("board") != board.name:
        raise BuildError(
            f"{project_dir} was rendered for board {manifest.get('board')}, not {board.name}: "
            "render it again for this board"
        )
    if board.family == "host":
        return _build_host(project_dir, board)
    if not (project_dir / "Makefile").is_file():
        raise BuildError(f"{project_dir} has no Makefile: render the project first")
    require_toolchain(board)
    jobs = jobs or max(1, os.cpu_count() or 1)
    started = time.perf_counter()
    proc = subprocess.run(
        ["make", "-C", str(project_dir), f"-j{jobs}", "all"],
        capture_output=True,
        text=True,
        check=False,
    )
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        fit = _linker_overflow(log, board, project_dir)
        if fit is not None:
            raise fit
        if "nano.specs" in log or "nosys.specs" in log:
            raise ToolchainMissingError(
                f"{board.toolchain.cc} is installed but its C library is not (nano.specs missing). "
                f"Install: sudo apt-get install -y --no-install-recommends {' '.join(board.toolchain.apt)}"
            )
        tail = "\n".join(log.strip().splitlines()[-40:])
        raise BuildError(f"firmware build for {board.name} failed in {project_dir}:\n{tail}")
    elf = project_dir / "firmware.elf"
    sizes = measure_elf(elf, board)
    result = BuildResult(
        elf=elf,
        board=board.name,
        flash_bytes=sizes["flash"],
        ram_bytes=sizes["ram"],
        stack_bytes=sizes["stack"],
        arena_bytes=sizes["arena"],
        flash_capacity=board.flash.size,
        ram_capacity=board.ram.size,
        sections=sizes["sections"],
        build_time_s=time.perf_counter() - started,
        log=log,
    )
    try:
        check_fit(result.flash_bytes, result.ram_bytes, board)
    except FitError as exc:
        if result.ram_bytes > board.ram.size:
            raise FitError(str(exc) + _ram_hint(project_dir)) from None
        raise
    return result
