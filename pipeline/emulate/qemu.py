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
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

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


class QemuSession:
    """Context manager: QEMU running `elf`; entering yields the pyserial URL.

        with QemuSession(board, "firmware.elf") as url:
            client = DeviceClient(url)

    `timeout` bounds how long QEMU may take to start listening. QEMU is
    killed on exit, whatever happened inside the block.
    """

    def __init__(
        self,
        board: Board,
        elf: Path | str,
        timeout: float = 10.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.board = board
        self.elf = Path(elf)
        self.timeout = timeout
        self.extra_args = tuple(extra_args)
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._stderr_lines: list[str] = []
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        """pyserial URL of the emulated UART."""
        if self.port is None:
            raise DeviceError("QEMU session not started")
        return f"socket://127.0.0.1:{self.port}"

    @property
    def stderr(self) -> str:
        """Everything QEMU wrote on stderr so far."""
        return "".join(self._stderr_lines)

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

    def _read_stderr(self, stream: object) -> None:
        for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
            line = raw.decode("utf-8", errors="replace")
            self._stderr_lines.append(line)
            if _LISTENING_MARK in line:
                self._listening.set()

    def _launch(self, program: str) -> None:
        self.port = free_tcp_port()
        cmd = qemu_command(self.board, self.elf, self.port, self.extra_args)
        cmd[0] = program
        self._stderr_lines = []
        self._listening.clear()
        self.process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._reader = threading.Thread(
            target=self._read_stderr, args=(self.process.stderr,), daemon=True
        )
        self._reader.start()

    def _wait_listening(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._listening.wait(0.02):
                return
            if self.process.poll() is not None:
                if self._reader is not None:
                    self._reader.join(1.0)
                raise DeviceError(
                    f"QEMU exited with code {self.process.returncode} before its serial port "
                    f"listened (board {self.board.name}, {self.elf}). QEMU said:\n{self.stderr.strip()}"
                )
        self.close()
        raise DeviceError(
            f"QEMU did not open its serial port within {self.timeout:.0f} s "
            f"(board {self.board.name}). QEMU said:\n{self.stderr.strip()}"
        )

    def start(self) -> str:
        """Launch QEMU and wait until its serial port listens; return the URL."""
        if not self.elf.is_file():
            raise DeviceError(f"firmware {self.elf} does not exist: build it first")
        program = self._program()
        for attempt in range(_PORT_ATTEMPTS):
            self._launch(program)
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

    def alive(self) -> bool:
        """True while QEMU runs."""
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        """Raise DeviceError (with QEMU's stderr) if QEMU has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise DeviceError(
                f"QEMU exited with code {self.process.returncode} while running "
                f"{self.elf}. QEMU said:\n{self.stderr.strip()}"
            )

    def close(self) -> None:
        """Stop QEMU (terminate, then kill) and reap it."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=3.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=3.0)
        if self._reader is not None:
            self._reader.join(1.0)
        if proc.stderr is not None:
            proc.stderr.close()
        self.process = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
