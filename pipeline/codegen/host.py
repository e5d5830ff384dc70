"""Build and run a generated model on the host (gcc, optionally ASan + UBSan).

The host build is the first oracle check of generated C: same bytes as the
numpy reference, no sanitizer report. Firmware builds come after.
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import subprocess
import tempfile
from importlib.resources import files
from pathlib import Path

import numpy as np

from ..errors import BuildError
from ..toolchain.host import compile_host, runtime_dir, runtime_sources


def host_main() -> Path:
    return Path(str(files("microfit.firmware_templates").joinpath("host", "main.c")))


_OBJECT_CACHE: dict[str, list[Path]] = {}
_OBJECT_DIR: list[Path] = []


def _runtime_objects(sanitize: bool, defines: dict[str, str] | None) -> list[Path]:
    """The runtime compiled once per process and set of flags (models differ, kernels do not)."""
    sources = runtime_sources()
    key_src = repr((sanitize, sorted((defines or {}).items()),
                    [(s.name, hashlib.sha256(s.read_bytes()).hexdigest()) for s in sources],
                    [(h.name, h.stat().st_mtime_ns)
                     for h in sorted((runtime_dir() / "include").glob("*.h"))]))
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    objs = _OBJECT_CACHE.get(key)
    if objs is not None and all(o.is_file() for o in objs):
        return objs
    if not _OBJECT_DIR:
        _OBJECT_DIR.append(Path(tempfile.mkdtemp(prefix="microfit-runtime-")))
        atexit.register(shutil.rmtree, _OBJECT_DIR[0], True)
    out = _OBJECT_DIR[0] / key
    objs = [compile_host([src], out / (src.stem + ".o"), [runtime_dir() / "include"],
                         defines=defines, sanitize=sanitize, extra_flags=("-c",))
            for src in sources]
    _OBJECT_CACHE[key] = objs
    return objs


def build_host_model(generated: Path, out: Path, sanitize: bool = True,
                     defines: dict[str, str] | None = None) -> Path:
    """Compile a generated model with the runtime and firmware_templates/host/main.c.

    The runtime's objects are compiled once per process and flags, then linked
    into every model.
    """
    generated = Path(generated)
    sources = [generated / "model.c", generated / "model_weights.c", host_main(),
               *_runtime_objects(sanitize, defines)]
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
