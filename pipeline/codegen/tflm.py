"""TFLite Micro's arena for the same model, to state beside microfit's.

The run's int8 graph is exported to .tflite (``ir.tflite_export``) and given
to the interpreter of the PyPI package ``tflite-micro``, which records its
allocations: the arena's "head" is TFLite Micro's activation plan (tensors and
kernel scratch, the counterpart of our arena) and its "total" adds the
interpreter's own structures (tensor and node records, persistent buffers).

The interpreter runs on this host, not on the microcontroller: its structures
hold pointers and ``size_t`` of the host's width, 8 bytes on a 64-bit host, so
its total is larger there than on a 32-bit MCU (the head, activation bytes, is
the same). The record says which host it ran on.

It runs in a child process: TFLite Micro prints its figures on the C stderr,
and a model it cannot handle must not take the code generator down with it.
When the package is missing, the graph cannot be written as .tflite, or
TFLite Micro rejects it (an op it lacks), the record gives no bytes and says
why (``reason``), so a report can print that instead of a number.
"""

from __future__ import annotations

import json
import platform
import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import UnsupportedOpError
from ..ir.graph import Graph

#: Arena handed to the interpreter: generous, its recorded use is what counts.
TRIAL_ARENA = 16 << 20
TIMEOUT_S = 120

_CHILD = r"""
import json, sys
try:
    import tflite_micro
    from tflite_micro.python.tflite_micro import runtime
except ImportError as exc:
    print(json.dumps({"missing": str(exc)}), flush=True)
    sys.exit(3)
import numpy as np
interp = runtime.Interpreter.from_bytes(open(sys.argv[1], "rb").read(), arena_size=int(sys.argv[2]))
d = interp.get_input_details(0)  # generated models have one input
interp.set_input(np.zeros(d["shape"], d["dtype"]), 0)
interp.invoke()
print(json.dumps({"version": getattr(tflite_micro, "__version__", None)}), flush=True)
interp.print_allocations()
"""


def host_description() -> str:
    """The machine and pointer width the interpreter ran with, e.g. 'x86_64, 64-bit'."""
    return f"{platform.machine() or 'unknown'}, {8 * struct.calcsize('P')}-bit"


def _record(**kw: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"head": None, "total": None, "host": host_description(),
                           "tflite_micro": None, "reason": None}
    rec.update(kw)
    return rec


def tflm_arena(qgraph: Graph, python: str | None = None) -> dict[str, Any]:
    """TFLite Micro's arena bytes for ``qgraph`` (see :func:`tflm_arena_of_tflite`)."""
    from ..ir.tflite_export import export_tflite

    try:
        data = export_tflite(qgraph)
    except (UnsupportedOpError, ValueError) as exc:
        return _record(reason=f"the graph has no .tflite form: {exc}")
    except Exception as exc:  # noqa: BLE001 - e.g. no flatbuffer schema installed
        return _record(reason=f".tflite export failed: {exc}")
    return tflm_arena_of_tflite(data, python)


def tflm_arena_of_tflite(data: bytes, python: str | None = None) -> dict[str, Any]:
    """Run TFLite Micro's interpreter on a .tflite once and read its recorded arena.

    Returns ``{"head", "total", "host", "tflite_micro", "reason"}``: head and
    total in bytes (None when it could not run, ``reason`` then says why),
    ``host`` the machine it ran on, ``tflite_micro`` the package version.
    ``python`` is the interpreter to run it with (default: this one).
    """
    python = python or sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(data)
        try:
            res = subprocess.run([python, "-c", _CHILD, str(path), str(TRIAL_ARENA)],
                                 capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return _record(reason=f"TFLite Micro's interpreter did not finish in {TIMEOUT_S} s")
        except OSError as exc:
            return _record(reason=f"could not start {python}: {exc}")
    info: dict[str, Any] = {}
    for line in res.stdout.splitlines():
        if line.startswith("{"):
            info.update(json.loads(line))
    if "missing" in info:
        return _record(reason="tflite-micro is not installed for this Python "
                              f"({info['missing']}); pip install tflite-micro")
    found = dict(re.findall(r"Arena allocation (total|head) (\d+) bytes", res.stderr))
    if res.returncode != 0 or "head" not in found:
        return _record(tflite_micro=info.get("version"),
                       reason="TFLite Micro's interpreter rejected the model: "
                              + _last_words(res.stderr, res.returncode))
    return _record(head=int(found["head"]), total=int(found.get("total", found["head"])),
                   tflite_micro=info.get("version"))


def _last_words(stderr: str, rc: int) -> str:
    """The interpreter's own error lines (its 'Didn't find op ...'), else the exception's last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    own = [ln for ln in lines if not ln.startswith(("Traceback", "File ", "^", "~"))
           and "tflite_micro/python" not in ln]
    tflm = [ln for ln in own if "op" in ln.lower() and ("find" in ln or "support" in ln)]
    picked = tflm[:2] or own[-1:]
    return "; ".join(picked)[:300] if picked else f"exit status {rc}"
