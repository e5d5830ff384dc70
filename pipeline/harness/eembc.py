"""EEMBC / MLPerf Tiny mode: build the firmware for the benchmark's runner, and drive it.

A firmware built with -DMF_HARNESS_EEMBC=1 answers the ASCII commands of
the MLPerf Tiny host runner (and EEMBC's EnergyRunner) instead of microfit's
binary protocol (firmware_templates/common/mf_eembc.c). `EembcRunner` sends
the runner's command sequence (`name%`, `profile%`, `db load N%`, `db
HEX%`..., `infer N W%`, `results%`) and parses the replies the way the
runner does, so a microfit firmware can be checked against what the
benchmark's own tools expect without installing them.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import serial

from microfit.errors import BuildError, DeviceTimeoutError, PortError, ProtocolError

# The runner sends 31 bytes (62 hex digits) per `db` command.
DB_CHUNK = 31
LINE_TIMEOUT_S = 30.0


def build_eembc_firmware(board: Any, model_dir: Path, out_dir: Path,
                         model_id: str = "microfit") -> Path:
    """Render and build `model_dir` for `board` in EEMBC mode; returns the ELF.

    The project is an ordinary microfit project built with
    EXTRA_CFLAGS=-DMF_HARNESS_EEMBC=1 (and the benchmark id `model_id` that
    `profile%` reports), so `make EXTRA_CFLAGS=...` in a rendered project
    does the same by hand.
    """
    from microfit.target.project import render_project
    from microfit.toolchain.firmware import require_toolchain

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", model_id):
        raise ValueError(f"model id {model_id!r} must be letters, digits, '_', '.' or '-'")
    require_toolchain(board)
    project = render_project(board, Path(model_dir), Path(out_dir))
    flags = f'-DMF_HARNESS_EEMBC=1 -DMF_EEMBC_MODEL_ID=\\"{model_id}\\"'
    proc = subprocess.run(["make", "-C", str(project), "all", f"EXTRA_CFLAGS={flags}"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"EEMBC-mode build failed in {project}:\n{proc.stdout[-2000:]}"
                         f"{proc.stderr[-2000:]}")
    return project / "firmware.elf"


@dataclass(frozen=True)
class EembcInference:
    """What `infer N W%` reported."""

    results: list[float]
    runs: int
    warmup: int
    start_us: int
    end_us: int

    @property
    def latency_us(self) -> float:
        """Mean microseconds per timed inference, (T1 - T0) / N, as the runner computes it."""
        return (self.end_us - self.start_us) / max(self.runs, 1)


class EembcRunner:
    """Speak the MLPerf Tiny runner's ASCII protocol to a device at `url`."""

    def __init__(self, url: str, baud: int = 115200, timeout: float = LINE_TIMEOUT_S) -> None:
        self.url = url
        self.timeout = timeout
        self.boot_lines: list[str] = []
        try:
            self._port = serial.serial_for_url(url, baudrate=baud, timeout=0.05)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PortError(f"cannot open {url}: {exc}") from exc

    def read_line(self) -> str:
        """One reply line without its CR LF; DeviceTimeoutError after `timeout`."""
        buf = bytearray()
        deadline = time.monotonic() + self.timeout
        while not buf.endswith(b"\r\n"):
            if time.monotonic() > deadline:
                raise DeviceTimeoutError(f"no complete line from {self.url} in {self.timeout:g} s "
                                         f"(got {bytes(buf)!r})")
            buf += self._port.read_until(b"\r\n")
        return buf[:-2].decode("ascii", errors="replace")

    def wait_ready(self) -> list[str]:
        """Lines up to and including `m-ready`."""
        lines = []
        while True:
            line = self.read_line()
            lines.append(line)
            if line == "m-ready":
                return lines

    def boot(self) -> list[str]:
        """Read the boot banner (ends with m-init-done, m-ready)."""
        self.boot_lines = self.wait_ready()
        if "m-init-done" not in self.boot_lines:
            raise ProtocolError(f"boot banner without m-init-done: {self.boot_lines}")
        return self.boot_lines

    def command(self, text: str) -> list[str]:
        """Send `text%`; return the reply lines before m-ready."""
        if len(text) > 80:
            raise ValueError("runner commands are at most 80 characters")
        self._port.write(text.encode("ascii") + b"%")
        return self.wait_ready()[:-1]

    @staticmethod
    def _field(lines: list[str], prefix: str) -> str:
        for line in lines:
            if line.startswith(prefix):
                return line[len(prefix):].strip("[]")
        raise ProtocolError(f"no line starting with {prefix!r} in {lines}")

    def name(self) -> str:
        """The device name (`m-name-dut-[NAME]`)."""
        return self._field(self.command("name"), "m-name-dut-")

    def profile(self) -> str:
        """The benchmark id (`m-model-[ID]`)."""
        return self._field(self.command("profile"), "m-model-")

    def timestamp_us(self) -> int:
        """The device's microsecond clock."""
        return int(self._field(self.command("timestamp"), "m-lap-us-"))

    def load(self, data: bytes) -> None:
        """`db load N%` then `db HEX%` commands of 31 bytes, as the runner does."""
        lines = self.command(f"db load {len(data)}")
        if f"m-[Expecting {len(data)} bytes]" not in lines:
            raise ProtocolError(f"db load refused: {lines}")
        done = False
        for offset in range(0, len(data), DB_CHUNK):
            lines = self.command("db " + data[offset:offset + DB_CHUNK].hex())
            if any(line.startswith("e-") for line in lines):
                raise ProtocolError(f"db refused: {lines}")
            done = "m-load-done" in lines
        if not done:
            raise ProtocolError("the device never said m-load-done")

    def infer(self, runs: int = 1, warmup: int = 10) -> EembcInference:
        """`infer N W%`: results of the last run and the timed laps around the N runs."""
        lines = self.command(f"infer {runs} {warmup}")
        laps = [int(line[len("m-lap-us-"):]) for line in lines if line.startswith("m-lap-us-")]
        if len(laps) != 2 or "m-infer-done" not in lines:
            raise ProtocolError(f"unexpected infer reply: {lines}")
        return EembcInference(self._parse_results(lines), runs, warmup, laps[0], laps[1])

    def results(self) -> list[float]:
        """`results%`: the last results line again."""
        return self._parse_results(self.command("results"))

    def _parse_results(self, lines: list[str]) -> list[float]:
        return [float(v) for v in self._field(lines, "m-results-").split(",")]

    def close(self) -> None:
        """Close the port."""
        self._port.close()

    def __enter__(self) -> EembcRunner:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

