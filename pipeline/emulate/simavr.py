"""Run AVR firmware in simavr with its USART on a localhost TCP port.

simavr's command-line program prints the UART but cannot feed it, and its
uart_pty part lost the firmware's first bytes, so microfit ships a small C
bridge (simavr_bridge.c) against libsimavr: it starts simulating once the
host has connected, feeds host bytes only while the simulated USART has room
(XON/XOFF from simavr), and stops the run if the stack grows into .bss. The
bridge is compiled once per source version into the user's cache folder.

simavr is cycle-exact for the AVR core, so the firmware's Timer1 counts real
cycles: the board's counter kind is "cycles", and milliseconds at the board's
clock are real too.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from microfit.emulate.session import EmulatorProcess
from microfit.errors import DeviceError, ToolchainMissingError
from microfit.target.boards import Board

_LISTENING_RE = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
_STACK_RE = re.compile(r"stack peak (\d+) bytes, (\d+) cycles")
# avr-gcc places RAM at 0x800000 + address in the ELF's single address space.
_AVR_DATA_OFFSET = 0x800000
SIMAVR_HEADER = Path("/usr/include/simavr/sim_avr.h")


def cache_dir() -> Path:
    """Where microfit keeps tools it builds itself ($XDG_CACHE_HOME/microfit)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "microfit"


def _bridge_source() -> bytes:
    return resources.files("microfit.emulate").joinpath("simavr_bridge.c").read_bytes()


def _apt_line(board: Board | None) -> str:
    packages = " ".join(board.emulator.apt) if board and board.emulator else "simavr libsimavr-dev gcc"
    return f"sudo apt-get install -y --no-install-recommends {packages} (or run `make toolchains`)"


def build_bridge(board: Board | None = None, cache: Path | None = None) -> Path:
    """Path of the compiled bridge, building it first if this source version is new.

    The file name carries a hash of the source, so an updated bridge is
    rebuilt and concurrent builds (pytest -n) never see a half-written file:
    each compiles to a temporary name and renames it into place.
    """
    source = _bridge_source()
    digest = hashlib.sha256(source).hexdigest()[:12]
    folder = Path(cache) if cache is not None else cache_dir()
    exe = folder / f"simavr-bridge-{digest}"
    if exe.is_file() and os.access(exe, os.X_OK):
        return exe
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise ToolchainMissingError(
            "no host C compiler (gcc) to build microfit's simavr bridge. Install: " + _apt_line(board)
        )
    include = SIMAVR_HEADER.parent
    if not SIMAVR_HEADER.is_file():
        raise ToolchainMissingError(
            f"libsimavr's headers ({SIMAVR_HEADER}) are missing: they are needed to build the "
            "bridge that connects simavr's UART to the host. Install: " + _apt_line(board)
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home (some CI sandboxes): fall back to /tmp
        folder = Path(tempfile.gettempdir()) / f"microfit-{os.getuid()}"
        exe = folder / exe.name
        if exe.is_file() and os.access(exe, os.X_OK):
            return exe
        folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        src = Path(tmp) / "simavr_bridge.c"
        src.write_bytes(source)
        out = Path(tmp) / "bridge"
        cmd = [cc, "-O2", "-Wall", "-Wextra", f"-I{include}", str(src), "-o", str(out), "-lsimavr"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            if "lsimavr" in proc.stderr or "sim_avr.h" in proc.stderr:
                raise ToolchainMissingError(
                    "cannot build microfit's simavr bridge: libsimavr is missing. Install: "
                    + _apt_line(board) + f"\n{proc.stderr.strip()}"
                )
            raise DeviceError(f"building the simavr bridge failed:\n  {' '.join(cmd)}\n{proc.stderr}")
        os.replace(out, exe)
    return exe


def stack_limit(elf_path: Path) -> int | None:
    """First RAM address past .data and .bss (avr-libc's __heap_start), or None."""
    with open(elf_path, "rb") as handle:
        try:
            elf = ELFFile(handle)
        except ELFError as exc:
            raise DeviceError(
                f"{elf_path} is not an ELF firmware image ({exc}): build it with "
                "`microfit build RUN --target <board>` and pass the firmware.elf it writes"
            ) from exc
        if elf["e_machine"] != "EM_AVR":
            # libsimavr crashes on other machines' code: refuse it here.
            raise DeviceError(
                f"{elf_path} was built for {elf['e_machine']}, not for AVR: build the firmware "
                "for this board (`microfit build RUN --target simavr-uno`)"
            )
        symtab = elf.get_section_by_name(".symtab")
        if symtab is None:
            return None
        for name in ("__heap_start", "_end", "__bss_end"):
            found = symtab.get_symbol_by_name(name)
            if found:
                return int(found[0]["st_value"]) - _AVR_DATA_OFFSET
    return None


def bridge_command(board: Board, elf: Path, bridge: Path, port: int = 0) -> list[str]:
    """The bridge's command line for `board` running `elf` (port 0: any free port)."""
    emu = board.emulator
    if emu is None or emu.kind != "simavr":
        raise DeviceError(f"board {board.name} has no simavr emulator section in its board file")
    cmd = [str(bridge), "--mcu", emu.machine, "--freq", str(board.clock_hz), "--port", str(port),
           "--uart", str(int(board.raw.get("uart", {}).get("index", 0)))]
    limit = stack_limit(elf)
    if limit is not None:
        cmd += ["--stack-limit", hex(limit)]
    return [*cmd, *emu.args, str(elf)]


class SimavrSession(EmulatorProcess):
    """Context manager: the firmware running in simavr; entering yields the pyserial URL.

        with SimavrSession(board, "firmware.elf") as url:
            client = DeviceClient(url)

    The simulation starts when the client connects and pauses while no
    client is connected. After close(), `stack_peak` holds the deepest stack
    the firmware used (bytes), measured by the bridge (it reports on SIGTERM).
    """

    name = "the simavr bridge"

    def __init__(
        self,
        board: Board,
        elf: Path | str,
        timeout: float = 10.0,
        port: int = 0,
        cache: Path | None = None,
    ) -> None:
        super().__init__(board, elf, timeout)
        self.requested_port = port
        self.cache = cache
        self.stack_peak: int | None = None
        self.cycles: int | None = None

    def _on_stderr_line(self, line: str) -> None:
        found = _LISTENING_RE.search(line)
        if found:
            self.port = int(found.group(1))
            self._listening.set()
        peak = _STACK_RE.search(line)
        if peak:
            self.stack_peak, self.cycles = int(peak.group(1)), int(peak.group(2))

    def start(self) -> str:
        """Build the bridge if needed, launch it, wait until it listens; return the URL."""
        self._check_elf()
        bridge = build_bridge(self.board, self.cache)
        self._spawn(bridge_command(self.board, self.elf, bridge, self.requested_port))
        try:
            self._wait_listening()
        except DeviceError:
            self.close()
            raise
        return self.url
