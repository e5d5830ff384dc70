"""The device protocol as a host process on a pseudo-terminal: a board without a board.

`build_host_device` compiles the generated model with the protocol's C code
and a HAL whose UART is a pty (firmware_templates/host/serial), and
`HostDevice` runs it and yields the pty's path. The harness then talks to it
over a real serial device node, through pyserial and termios, exactly as to a
board on /dev/ttyACM0: the quickest way to check a model and the link
without hardware or an emulator, and the only one with the sanitizers on.

    microfit emulate RUN --host           # prints /dev/pts/N
    microfit validate RUN --port /dev/pts/N
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from types import TracebackType

from microfit.emulate.session import stop_process
from microfit.errors import DeviceError
from microfit.toolchain.host import compile_host, runtime_dir, runtime_sources


def templates_dir() -> Path:
    """firmware_templates/ inside the installed package."""
    return Path(str(files("microfit.firmware_templates")))


def build_host_device(model_dir: Path | str, out: Path | str, sanitize: bool = False,
                      extra_flags: Sequence[str] = ()) -> Path:
    """Compile `model_dir` (generated sources or a hand-written model) into a pty device.

    The model is built with the per-layer hooks (mf_layer_hooks.h), like the
    firmware. With `sanitize`, AddressSanitizer and UBSan watch every request.
    """
    model_dir = Path(model_dir)
    serial_dir = templates_dir() / "host" / "serial"
    common = templates_dir() / "common"
    sources = [serial_dir / "mf_hal_host_serial.c", common / "mf_frame.c", common / "mf_protocol.c"]
    sources += sorted(model_dir.glob("*.c"))
    include_dirs = [serial_dir, common, model_dir]
    if (model_dir / "model_weights.h").exists() or any(
            "mf_runtime.h" in p.read_text(errors="ignore") for p in model_dir.glob("*.c")):
        sources += runtime_sources()
        include_dirs.append(runtime_dir() / "include")
    return compile_host(sources, Path(out), include_dirs, sanitize=sanitize,
                        extra_flags=["-D_XOPEN_SOURCE=700", "-include", "mf_layer_hooks.h",
                                     *extra_flags])


class HostDevice:
    """Context manager: run a host device; entering yields its pty path.

        with HostDevice(exe) as port:
            client = DeviceClient(port)
    """

    def __init__(self, exe: Path | str, timeout: float = 10.0) -> None:
        self.exe = Path(exe)
        self.timeout = timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.port: str | None = None

    def start(self) -> str:
        """Launch the device and wait for it to name its pty."""
        if not self.exe.is_file():
            raise DeviceError(f"host device {self.exe} does not exist: build it first")
        self.process = subprocess.Popen([str(self.exe)], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.process.stdout.readline()),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        reader.join(self.timeout)
        path = line[0].decode().strip() if line else ""
        if not path.startswith("/dev/"):
            err = self.process.stderr.read().decode(errors="replace") if self.process.poll() is not None else ""  # type: ignore[union-attr]
            self.close()
            raise DeviceError(f"host device {self.exe} did not open a pseudo-terminal: {err.strip()}")
        self.port = path
        return path

    def close(self) -> None:
        """Stop the device process."""
        proc = self.process
        if proc is None:
            return
        stop_process(proc)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        self.process = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
