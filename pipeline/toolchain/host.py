"""Compile C for the host machine: kernel tests and whole-model host runs.

The host build is where the runtime meets AddressSanitizer and
UndefinedBehaviorSanitizer, which no microcontroller toolchain offers; the
same sources then go to arm-none-eabi-gcc and avr-gcc unchanged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from importlib.resources import files
from pathlib import Path

from microfit.errors import BuildError, ToolchainMissingError

WARNING_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror")
SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                  "-fno-omit-frame-pointer")


def runtime_dir() -> Path:
    """The C runtime (include/, src/) shipped inside the installed package."""
    path = Path(str(files("microfit.firmware_templates") / "runtime"))
    if not (path / "include" / "mf_runtime.h").is_file():
        raise BuildError(f"microfit's C runtime is missing from {path}; reinstall microfit")
    return path


def runtime_sources() -> list[Path]:
    """Every kernel source of the runtime, sorted so builds are reproducible."""
    return sorted((runtime_dir() / "src").glob("*.c"))


def find_host_compiler() -> str:
    """gcc, else cc; raise ToolchainMissingError naming the package when neither exists."""
    for name in ("gcc", "cc"):
        path = shutil.which(name)
        if path:
            return path
    raise ToolchainMissingError(
        "no host C compiler (gcc or cc) found on PATH; install it with "
        "`sudo apt-get install gcc` (Debian/Ubuntu)")


def compile_host(sources: Sequence[Path], out: Path, include_dirs: Sequence[Path],
                 defines: Mapping[str, str] | None = None, sanitize: bool = True,
                 extra_flags: Iterable[str] = ()) -> Path:
    """Compile and link ``sources`` into the executable ``out``; return ``out``.

    Warnings are errors. With ``sanitize``, the binary aborts on the first
    out-of-bounds access or undefined behaviour, so a test that runs it and
    checks the exit code catches both. ``defines`` maps a macro to its value
    (an empty value defines it as 1).
    """
    cc = find_host_compiler()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [cc, *WARNING_FLAGS, "-O1", "-g"]
    if sanitize:
        cmd += SANITIZE_FLAGS
    for d in include_dirs:
        cmd.append(f"-I{d}")
    for name, value in (defines or {}).items():
        cmd.append(f"-D{name}" if value in ("", None) else f"-D{name}={value}")
    cmd += list(extra_flags)
    cmd += [str(s) for s in sources]
    cmd += ["-o", str(out)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "LC_ALL": "C"})
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"host compile timed out after {exc.timeout} s: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        raise BuildError(f"host compile failed (exit {proc.returncode}):\n  {' '.join(cmd)}\n"
                         f"{proc.stderr.strip()}")
    return out
