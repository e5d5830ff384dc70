"""Build and run a generated model on the host (gcc, optionally ASan + UBSan).

The host build is the first oracle check of generated C: same bytes as the
numpy reference, no sanitizer report. Firmware builds come after.
"""

from __future__ import annotations

import subprocess
import tempfile
from importlib.resources import files
from pathlib import Path

import numpy as np

from ..build.host import compile_host, runtime_dir, runtime_sources
from ..errors import BuildError


def host_main() -> Path:
    return Path(str(files("microfit.firmware_templates").joinpath("host", "main.c")))


def build_host_model(generated: Path, out: Path, sanitize: bool = True,
                     defines: dict[str, str] | None = None) -> Path:
    generated = Path(generated)
    sources = [generated / "model.c", generated / "model_weights.c", host_main(), *runtime_sources()]
    return compile_host(sources, out, [generated, runtime_dir() / "include"], defines=defines,
                        sanitize=sanitize)


def run_host_model(exe: Path, inputs: np.ndarray, output_size: int, timeout: float = 120) -> np.ndarray:
    """Feed int8 inputs [N, ...] through the host executable; returns int8 [N, output_size]."""
    inputs = np.ascontiguousarray(inputs, dtype=np.int8)
    with tempfile.TemporaryDirectory() as tmp:
        fin, fout = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        fin.write_bytes(inputs.tobytes())
        proc = subprocess.run([str(exe), str(fin), str(fout)], capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise BuildError(f"host model {exe} failed (exit {proc.returncode}):\n{proc.stderr}")
        out = np.frombuffer(fout.read_bytes(), dtype=np.int8)
    return out.reshape(len(inputs), output_size)
