"""Run Cortex-M firmware in QEMU with its UART on a localhost TCP port.

QEMU is started with `-icount shift=0` so that its virtual clock counts
executed instructions: the firmware's SysTick then gives repeatable
instruction counts (never milliseconds; QEMU is not cycle-accurate). The
serial port is a TCP server that waits for its client, so no firmware output
can be lost before the harness connects.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

from microfit.emulate.session import EmulatorProcess
from microfit.errors import DeviceError, ToolchainMissingError
from microfit.target.boards import Board

# QEMU prints this on stderr once its wait=on serial server listens.
_LISTENING_MARK = "QEMU waiting for connection"
_PORT_ATTEMPTS = 3


def free_tcp_port() -> int:
    """A localhost TCP port that was free a moment ago (QEMU may still lose a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def qemu_command(board: Board, elf: Path, port: int, extra_args: Sequence[str] = ()) -> list[str]:
    """The QEMU command line for `board` running `elf`, serial on `port`."""
    emu = board.emulator
    if emu is None or emu.kind != "qemu":
        raise DeviceError(f"board {board.name} has no QEMU emulator section in its board file")
    cmd = [emu.program, "-M", emu.machine]
    if emu.cpu:
        cmd += ["-cpu", emu.cpu]
    cmd += [
        "-kernel", str(elf),
        "-display", "none",
        "-monitor", "none",
        "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on",
        *emu.args,
        *extra_args,
    ]
    return cmd


class QemuSession(EmulatorProcess):
    """Context manager: QEMU running `elf`; entering yields the pyserial URL.

        with QemuSession(board, "firmware.elf") as url:
            client = DeviceClient(url)

    `timeout` bounds how long QEMU may take to start listening. QEMU is
    killed on exit, whatever happened inside the block.
    """

    name = "QEMU"

    def __init__(
        self,
        board: Board,
        elf: Path | str,
        timeout: float = 10.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(board, elf, timeout)
        self.extra_args = tuple(extra_args)

    def _program(self) -> str:
        emu = self.board.emulator
        if emu is None:
            raise DeviceError(f"board {self.board.name} has no emulator section in its board file")
        path = shutil.which(emu.program)
        if path is None:
            packages = " ".join(emu.apt) or emu.program
            raise ToolchainMissingError(
                f"{emu.program} not found on PATH; it is needed to emulate {self.board.name}. "
                f"Install it: sudo apt-get install -y --no-install-recommends {packages} "
                "(or run `make toolchains`)"
            )
        return path

    def _on_stderr_line(self, line: str) -> None:
        if _LISTENING_MARK in line:
            self._listening.set()

    def start(self) -> str:
        """Launch QEMU and wait until its serial port listens; return the URL."""
        self._check_elf()
        program = self._program()
        for attempt in range(_PORT_ATTEMPTS):
            self.port = free_tcp_port()
            cmd = qemu_command(self.board, self.elf, self.port, self.extra_args)
            cmd[0] = program
            self._spawn(cmd)
            try:
                self._wait_listening()
                return self.url
            except DeviceError:
                # Another process may have taken the port between our probe
                # and QEMU's bind: try a fresh port before giving up.
                if "Address already in use" in self.stderr and attempt + 1 < _PORT_ATTEMPTS:
                    self.close()
                    continue
                self.close()
                raise
        raise AssertionError("unreachable")
