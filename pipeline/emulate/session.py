"""What every emulator session shares: a child process whose serial port is a
localhost TCP server, found by watching the child's stderr.

QemuSession and SimavrSession differ in how they build the command line and
what their stderr says; starting, waiting for the port, checking that the
child still runs and stopping it are the same and live here.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

from microfit.errors import DeviceError
from microfit.target.boards import Board


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate `proc` (SIGTERM, then SIGKILL after 3 s) and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=3.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=3.0)


class EmulatorProcess:
    """Context manager around one emulator process; entering yields the pyserial URL.

    Subclasses set `name` (how messages call the program), implement `start`
    with `_spawn` + `_wait_listening`, and override `_on_stderr_line` to pick
    facts out of the child's stderr (they must call `self._listening.set()`
    once the port listens, with `self.port` set).
    """

    #: How messages name the child process ("QEMU", "the simavr bridge").
    name = "the emulator"

    def __init__(self, board: Board, elf: Path | str, timeout: float = 10.0) -> None:
        self.board = board
        self.elf = Path(elf)
        self.timeout = timeout
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._stderr_lines: list[str] = []
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        """pyserial URL of the emulated serial port."""
        if self.port is None:
            raise DeviceError(f"{self.name} session not started")
        return f"socket://127.0.0.1:{self.port}"

    @property
    def stderr(self) -> str:
        """Everything the child wrote on stderr so far."""
        return "".join(self._stderr_lines)

    def _on_stderr_line(self, line: str) -> None:
        """Called for each stderr line; subclasses look for their listening mark."""

    def _read_stderr(self, stream: object) -> None:
        for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
            line = raw.decode("utf-8", errors="replace")
            self._stderr_lines.append(line)
            self._on_stderr_line(line)

    def _check_elf(self) -> None:
        if not self.elf.is_file():
            raise DeviceError(f"firmware {self.elf} does not exist: build it first")

    def _spawn(self, cmd: list[str]) -> None:
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
        """Return once the serial port listens; DeviceError (child's stderr in it) if not."""
        assert self.process is not None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._listening.wait(0.02):
                return
            if self.process.poll() is not None:
                if self._reader is not None:
                    self._reader.join(1.0)
                raise DeviceError(
                    f"{self.name} exited with code {self.process.returncode} before its serial "
                    f"port listened (board {self.board.name}, {self.elf}). "
                    f"It said:\n{self.stderr.strip()}"
                )
        self.close()
        raise DeviceError(
            f"{self.name} did not open its serial port within {self.timeout:.0f} s "
            f"(board {self.board.name}). It said:\n{self.stderr.strip()}"
        )

    def start(self) -> str:
        raise NotImplementedError

    def alive(self) -> bool:
        """True while the emulator runs."""
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        """Raise DeviceError (with the child's stderr) if the emulator has exited."""
        if self.process is not None and self.process.poll() is not None:
            if self._reader is not None:
                self._reader.join(1.0)
            raise DeviceError(
                f"{self.name} exited with code {self.process.returncode} while running "
                f"{self.elf}. It said:\n{self.stderr.strip()}"
            )

    def close(self) -> None:
        """Stop the child (terminate, then kill) and reap it."""
        proc = self.process
        if proc is None:
            return
        stop_process(proc)
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
