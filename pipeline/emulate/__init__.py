"""Emulators that run the firmware without hardware: QEMU (Cortex-M), simavr (AVR),
and the host board's pty device program.

`emulator_session(board, elf)` picks the right one from the board file's
[emulator] section; every session is a context manager whose `__enter__`
returns a pyserial URL (socket://127.0.0.1:PORT) for the harness.
"""

from __future__ import annotations

from pathlib import Path

from microfit.emulate.qemu import QemuSession
from microfit.emulate.simavr import SimavrSession
from microfit.errors import DeviceError
from microfit.target.boards import Board

EmulatorSession = QemuSession | SimavrSession


def emulator_session(board: Board, elf: Path | str, timeout: float = 10.0) -> EmulatorSession:
    """A not-yet-started session running `elf` on `board`'s emulator.

    Raises DeviceError when the board has no emulator (a real board: give the
    harness its serial port instead).
    """
    emu = board.emulator
    if emu is None:
        raise DeviceError(
            f"board {board.name} has no emulator: flash it (microfit flash) and give its "
            "serial port (--port /dev/ttyACM0)"
        )
    if emu.kind == "qemu":
        return QemuSession(board, elf, timeout=timeout)
    if emu.kind == "simavr":
        return SimavrSession(board, elf, timeout=timeout)
    if emu.kind == "host":
        from microfit.harness.hostdev import HostDevice

        return HostDevice(elf, timeout=timeout)
    raise DeviceError(f"board {board.name}: unknown emulator kind '{emu.kind}' in its board file")


__all__ = ["EmulatorSession", "QemuSession", "SimavrSession", "emulator_session"]
