"""Board files: one TOML per board in targets/, loaded into a `Board`.

A board file is the single place that knows a board's numbers (clock, memory
map, UART, timer, compiler flags, emulator). Every later stage reads them from
the `Board` so that a new board is a new data file, not new code. The files are
package data (`microfit.targets`), found with importlib.resources so that an
installed wheel sees the same boards as a source checkout.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from microfit.errors import BoardNotFoundError

# "nanoseconds" is the host board's clock (protocol counter kind 2).
COUNTER_KINDS = ("cycles", "instructions", "nanoseconds")


class InvalidBoardFileError(BoardNotFoundError):
    """A board file exists but lacks a field or has a wrong value.

    Derives from BoardNotFoundError so callers that handle "no usable board"
    handle both the same way.
    """


@dataclass(frozen=True)
class MemoryRegion:
    """A contiguous memory region: where it starts and how many bytes it has."""

    origin: int
    size: int

    @property
    def end(self) -> int:
        """First address past the region."""
        return self.origin + self.size

    def contains(self, address: int) -> bool:
        """True when `address` lies inside the region."""
        return self.origin <= address < self.end


@dataclass(frozen=True)
class UartSpec:
    """The serial port the protocol runs on."""

    kind: str
    base: int | None = None
    baud: int = 115200
    rx_irq: int | None = None


@dataclass(frozen=True)
class CounterSpec:
    """What the firmware's tick counter measures.

    `kind` is "cycles" (real boards, cycle-exact simulators) or "instructions"
    (QEMU with -icount). One tick is `per_tick` units of `kind`, so a reported
    count is only exact to +-`per_tick`.
    """

    kind: str
    source: str
    per_tick: int = 1

    @property
    def resolution(self) -> int:
        """Smallest difference the counter can show, in units of `kind`."""
        return self.per_tick


@dataclass(frozen=True)
class ToolchainSpec:
    """The cross compiler, and the Debian packages that provide it."""

    cc: str
    prefix: str
    apt: tuple[str, ...] = ()


@dataclass(frozen=True)
class EmulatorSpec:
    """How to run the firmware without hardware."""

    kind: str
    program: str
    machine: str
    cpu: str | None = None
    args: tuple[str, ...] = ()
    apt: tuple[str, ...] = ()


@dataclass(frozen=True)
class Board:
    """Everything microfit needs to know about one board.

    `raw` keeps the whole parsed file so a board family can read keys of its
    own without this class growing a field for every family.
    """

    name: str
    description: str
    family: str
    core: str
    cpu_flags: tuple[str, ...]
    clock_hz: int
    flash: MemoryRegion
    ram: MemoryRegion
    stack_size: int
    opt_level: str
    uart: UartSpec
    counter: CounterSpec
    toolchain: ToolchainSpec
    emulator: EmulatorSpec | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def summary(self) -> dict[str, Any]:
        """One row for `microfit targets`: the numbers a user picks a board by.

        `counter` says what latency figures mean on the board (cycles or
        emulator instructions); `runs_on` how firmware gets there: the
        emulator, or the preferred flashing tool of the board file.
        """
        flashers = self.raw.get("flasher") or []
        if self.emulator is not None:
            runs_on = self.emulator.kind
        elif flashers:
            runs_on = str(flashers[0].get("tool"))
        else:
            runs_on = self.family
        return {
            "name": self.name,
            "core": self.core,
            "clock_mhz": self.clock_hz / 1e6,
            "flash_kb": _kib(self.flash.size),
            "ram_kb": _kib(self.ram.size),
            "counter": self.counter.kind,
            "runs_on": runs_on,
        }

    def __str__(self) -> str:
        return (
            f"{self.name}: {self.core} @ {self.clock_hz / 1e6:g} MHz, "
            f"{self.flash.size // 1024} KB flash, {self.ram.size // 1024} KB RAM"
        )


def _kib(n: int) -> int | float:
    """Bytes in KB, whole when exact (512), else to one decimal (31.5 for the Uno)."""
    return n // 1024 if n % 1024 == 0 else round(n / 1024, 1)


def _targets_dir() -> Any:
    return resources.files("microfit.targets")


def _require(table: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if key not in table:
        raise InvalidBoardFileError(f"board file {where}: missing required key '{key}'")
    value = table[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise InvalidBoardFileError(
            f"board file {where}: key '{key}' should be {getattr(kind, '__name__', kind)}, "
            f"got {value!r}"
        )
    return value


def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    return _require(data, key, where, dict)


def board_from_dict(data: Mapping[str, Any], where: str = "<dict>") -> Board:
    """Build a Board from parsed TOML, checking every field it uses.

    Checking here, once, means a typo in a board file surfaces as one clear
    message at load time instead of as a broken link map later.
    """
    memory = _table(data, "memory", where)
    regions = {}
    for region in ("flash", "ram"):
        table = _require(memory, region, f"{where} [memory]", dict)
        origin = _require(table, "origin", f"{where} [memory.{region}]", int)
        size = _require(table, "size", f"{where} [memory.{region}]", int)
        if size <= 0 or origin < 0:
            raise InvalidBoardFileError(f"board file {where}: [memory.{region}] must be positive")
        regions[region] = MemoryRegion(origin=origin, size=size)

    uart_t = _table(data, "uart", where)
    uart = UartSpec(
        kind=_require(uart_t, "kind", f"{where} [uart]", str),
        base=uart_t.get("base"),
        baud=int(uart_t.get("baud", 115200)),
        rx_irq=uart_t.get("rx_irq"),
    )
    counter_t = _table(data, "counter", where)
    counter = CounterSpec(
        kind=_require(counter_t, "kind", f"{where} [counter]", str),
        source=_require(counter_t, "source", f"{where} [counter]", str),
        per_tick=int(counter_t.get("per_tick", 1)),
    )
    if counter.kind not in COUNTER_KINDS:
        raise InvalidBoardFileError(
            f"board file {where}: counter kind '{counter.kind}' is not one of {COUNTER_KINDS}"
        )
    tool_t = _table(data, "toolchain", where)
    toolchain = ToolchainSpec(
        cc=_require(tool_t, "cc", f"{where} [toolchain]", str),
        prefix=str(tool_t.get("prefix", "")),
        apt=tuple(tool_t.get("apt", ())),
    )
    emulator = None
    if "emulator" in data:
        emu_t = _table(data, "emulator", where)
        emulator = EmulatorSpec(
            kind=_require(emu_t, "kind", f"{where} [emulator]", str),
            program=_require(emu_t, "program", f"{where} [emulator]", str),
            machine=_require(emu_t, "machine", f"{where} [emulator]", str),
            cpu=emu_t.get("cpu"),
            args=tuple(emu_t.get("args", ())),
            apt=tuple(emu_t.get("apt", ())),
        )
    return Board(
        name=_require(data, "name", where, str),
        description=str(data.get("description", "")),
        family=_require(data, "family", where, str),
        core=_require(data, "core", where, str),
        cpu_flags=tuple(_require(data, "cpu_flags", where, list)),
        clock_hz=_require(data, "clock_hz", where, int),
        flash=regions["flash"],
        ram=regions["ram"],
        stack_size=int(data.get("stack_size", 4096)),
        opt_level=str(data.get("opt_level", "-Os")),
        uart=uart,
        counter=counter,
        toolchain=toolchain,
        emulator=emulator,
        raw=data,
    )


def _parse(text: str, where: str) -> Board:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidBoardFileError(f"board file {where} is not valid TOML: {exc}") from exc
    return board_from_dict(data, where)


def board_names() -> list[str]:
    """Names of the shipped boards, sorted."""
    return sorted(
        entry.name[: -len(".toml")]
        for entry in _targets_dir().iterdir()
        if entry.name.endswith(".toml")
    )


def list_boards() -> list[Board]:
    """Every shipped board, sorted by name."""
    return [load_board(name) for name in board_names()]


def load_board(name: str | Path) -> Board:
    """Load a shipped board by name, or a board file by path.

    A path (anything ending in .toml that exists) lets users describe their
    own board without touching the package.
    """
    path = Path(name)
    if str(name).endswith(".toml") and path.is_file():
        board = _parse(path.read_text(encoding="utf-8"), str(path))
        return board
    entry = _targets_dir().joinpath(f"{name}.toml")
    if not entry.is_file():
        available = ", ".join(board_names()) or "(none)"
        raise BoardNotFoundError(
            f"no board named '{name}'. Available boards: {available}. "
            "A board file path (my_board.toml) is accepted too."
        )
    board = _parse(entry.read_text(encoding="utf-8"), f"targets/{name}.toml")
    if board.name != name:
        raise InvalidBoardFileError(
            f"board file targets/{name}.toml declares name '{board.name}'; the two must match"
        )
    return board
