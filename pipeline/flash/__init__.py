"""Put a built firmware on a real board with the board's own programming tool.

Each board file lists its flashers (`[[flasher]]`), in order of preference:
the tool's program name, its command line with placeholders, and how to
install it. `plan_flash` picks the first installed one (or the one asked
for), fills in the firmware files and the port, and returns the exact
command, which `microfit flash` prints before running it (and only prints
with --dry-run). A board without flashers is an emulated one.

Placeholders: {elf} {hex} {bin} {uf2} (the firmware files), {port} (serial
port of the board's bootloader), {drive} (mount point of a UF2 boot drive).
The tool "uf2" is built in: a file copy onto the mounted drive.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from microfit.errors import DeviceError, MicrofitError, ToolchainMissingError
from microfit.target.boards import Board, InvalidBoardFileError

UF2_TOOL = "uf2"
_FILE_KEYS = ("elf", "hex", "bin", "uf2")
# Where desktop Linux mounts removable drives (udisks), then macOS.
_MOUNT_GLOBS = ("/media/*/{label}", "/run/media/*/{label}", "/media/{label}", "/Volumes/{label}")


class FlashError(MicrofitError):
    """Flashing is impossible as asked (emulated board, no port, file missing) or failed."""


@dataclass(frozen=True)
class Flasher:
    """One way to program a board: a tool and its command-line template."""

    tool: str
    command: tuple[str, ...]
    install: str
    drive_label: str | None = None

    @property
    def needs_port(self) -> bool:
        """True when the command talks to a serial bootloader (avrdude, arduino-cli)."""
        return any("{port}" in arg for arg in self.command)

    @property
    def needs_drive(self) -> bool:
        """True for the UF2 copy, which needs the boot drive's mount point."""
        return any("{drive}" in arg for arg in self.command)

    def installed(self, which: Callable[[str], str | None] = shutil.which) -> bool:
        """True when the tool can run here (the UF2 copy needs nothing)."""
        return self.tool == UF2_TOOL or which(self.command[0]) is not None


@dataclass
class FlashPlan:
    """The command that would program the board, and whether its tool is there."""

    board: str
    tool: str
    argv: list[str]
    installed: bool
    install: str
    notes: list[str] = field(default_factory=list)

    @property
    def command_line(self) -> str:
        """The command as a shell would take it."""
        return shlex.join(self.argv)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for `microfit --json flash`."""
        return {
            "board": self.board,
            "tool": self.tool,
            "command": self.command_line,
            "argv": list(self.argv),
            "installed": self.installed,
            "install": self.install,
            "notes": list(self.notes),
        }


def flashers(board: Board) -> list[Flasher]:
    """The board's flashers in order of preference (empty for emulated boards)."""
    entries = board.raw.get("flasher", [])
    if not isinstance(entries, list):
        raise InvalidBoardFileError(f"board {board.name}: [[flasher]] must be an array of tables")
    found = []
    for i, entry in enumerate(entries):
        where = f"board {board.name}, flasher {i + 1}"
        if not isinstance(entry, Mapping):
            raise InvalidBoardFileError(f"{where}: must be a table")
        command = entry.get("command")
        if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
            raise InvalidBoardFileError(f"{where}: 'command' must be a non-empty list of strings")
        tool = entry.get("tool")
        if not isinstance(tool, str) or not tool:
            raise InvalidBoardFileError(f"{where}: 'tool' must name the program")
        found.append(
            Flasher(
                tool=tool,
                command=tuple(command),
                install=str(entry.get("install", f"install {tool}")),
                drive_label=entry.get("drive_label"),
            )
        )
    return found


def firmware_files(elf: Path) -> dict[str, Path]:
    """The firmware files a build leaves beside firmware.elf (hex, bin, uf2)."""
    elf = Path(elf)
    return {key: elf.with_suffix(f".{key}") for key in _FILE_KEYS}


def find_uf2_drive(label: str) -> Path | None:
    """Mount point of a drive named `label` (e.g. RPI-RP2), or None."""
    for pattern in _MOUNT_GLOBS:
        for path in sorted(glob.glob(pattern.format(label=label))):
            if os.path.isdir(path):
                return Path(path)
    return None


def _choose(board: Board, options: Sequence[Flasher], tool: str | None,
            which: Callable[[str], str | None]) -> Flasher:
    if tool is not None:
        for option in options:
            if option.tool == tool:
                return option
        known = ", ".join(o.tool for o in options)
        raise FlashError(f"board {board.name} cannot be flashed with '{tool}'; it knows: {known}")
    for option in options:
        if option.installed(which):
            return option
    return options[0]


def plan_flash(
    board: Board,
    elf: Path,
    port: str | None = None,
    tool: str | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> FlashPlan:
    """The exact command that programs `board` with the firmware `elf`.

    Without `tool`, the first installed flasher of the board file wins; when
    none is installed the first is planned (installed=False), so a dry run
    still shows what would run. `port` is the serial port for bootloader
    flashers and the mount point for the UF2 copy.
    """
    options = flashers(board)
    if not options:
        how = (
            "run it in its emulator instead: microfit emulate RUN, or microfit validate RUN"
            if board.emulator is not None
            else "its board file lists no [[flasher]]"
        )
        raise FlashError(f"board {board.name} is not flashed: {how}")
    chosen = _choose(board, options, tool, which)
    notes: list[str] = []
    values = {key: str(path) for key, path in firmware_files(elf).items()}
    values["elf"] = str(elf)
    if chosen.needs_port:
        default = board.raw.get("arduino", {}).get("default_port")
        if port is None:
            port = default or "/dev/ttyACM0"
            notes.append(f"no --port given: using {port}")
        values["port"] = port
    if chosen.needs_drive:
        drive: Path | str | None = port
        if drive is None:
            drive = find_uf2_drive(chosen.drive_label or "RPI-RP2")
            if drive is None:
                drive = f"/media/$USER/{chosen.drive_label or 'RPI-RP2'}"
                notes.append(
                    f"no {chosen.drive_label} drive is mounted: hold BOOTSEL while plugging the "
                    "board in, or give its mount point with --port"
                )
        values["drive"] = str(drive)
    argv = [arg.format(**values) for arg in chosen.command]
    return FlashPlan(
        board=board.name,
        tool=chosen.tool,
        argv=argv,
        installed=chosen.installed(which),
        install=chosen.install,
        notes=notes,
    )


def run_flash(plan: FlashPlan, elf: Path, timeout: float = 300.0) -> None:
    """Run a planned command; raise ToolchainMissingError or FlashError with its output."""
    if not plan.installed:
        raise ToolchainMissingError(
            f"{plan.tool} is not installed; it flashes {plan.board}. Install: {plan.install}"
        )
    needed = [a for a in plan.argv if a.endswith((".elf", ".hex", ".bin", ".uf2"))]
    for path in needed or [str(elf)]:
        if not Path(path).is_file():
            raise FlashError(f"{path} does not exist: build the firmware first (microfit build RUN)")
    if plan.tool == UF2_TOOL:
        source, dest = Path(plan.argv[1]), Path(plan.argv[2])
        if not dest.is_dir():
            raise DeviceError(
                f"{dest} is not a mounted UF2 drive: hold BOOTSEL while plugging the board in, "
                "then try again (or give the mount point with --port)"
            )
        shutil.copyfile(source, dest / source.name)
        return
    try:
        proc = subprocess.run(plan.argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise FlashError(f"{plan.tool} did not finish within {timeout:.0f} s: {plan.command_line}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise FlashError(f"{plan.tool} failed (exit {proc.returncode}): {plan.command_line}\n{tail}")


__all__ = [
    "FlashError",
    "FlashPlan",
    "Flasher",
    "find_uf2_drive",
    "firmware_files",
    "flashers",
    "plan_flash",
    "run_flash",
]


def flash_run(
    run_dir: Path,
    target: str | None = None,
    port: str | None = None,
    tool: str | None = None,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """`microfit flash RUN`: program the board with the firmware `microfit build` made.

    Prints the command (through `echo`) before running it; with `dry_run`
    only prints it. Returns the plan as a dict.
    """
    import json

    from microfit.errors import RunFolderError
    from microfit.target.boards import load_board

    run_dir = Path(run_dir)
    build_json = run_dir / "build.json"
    if not build_json.is_file():
        raise RunFolderError(f"{build_json} is missing: build the firmware first (microfit build {run_dir})")
    build = json.loads(build_json.read_text())
    built_for = build.get("board")
    board = load_board(target or built_for)
    if built_for is not None and built_for != board.name:
        raise FlashError(
            f"{run_dir} holds firmware built for {built_for}, not {board.name}: "
            f"run `microfit build {run_dir} --target {board.name}` first"
        )
    elf = Path(build["elf"])
    plan = plan_flash(board, elf, port=port, tool=tool)
    for note in plan.notes:
        echo(f"note: {note}")
    echo(f"$ {plan.command_line}")
    if not plan.installed:
        echo(f"{plan.tool} is not installed here. Install: {plan.install}")
    if not dry_run:
        run_flash(plan, elf)
    result = plan.to_dict()
    result["dry_run"] = dry_run
    return result


__all__ += ["flash_run"]
