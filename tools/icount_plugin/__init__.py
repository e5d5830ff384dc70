"""Exact instruction counts of Cortex-M code running in QEMU.

QEMU's ``-icount`` clock makes a firmware timer count instructions, but only
to the timer's resolution (40 instructions per SysTick tick on the mps2
boards) and with the timer's own overhead. ``microfit.icount`` counts them
exactly instead, with a small TCG plugin (``mf_icount.c``) that microfit
compiles on first use into a cache folder: the plugin snapshots the number
of executed instructions each time the guest calls a marker function
(``mf_icount_mark``), and the difference of two snapshots is the exact
instruction count of what ran between the calls.

It also carries a minimal bare-metal environment for QEMU's mps2 boards
(``mps2/``: start-up code, UART output, semihosting exit, linker script) so
kernels and models can be measured and tested without the serial protocol::

    elf = build_baremetal([main_c, *sources], out / "bench.elf", board="qemu-mps2-an386")
    run = run_counted(elf, board="qemu-mps2-an386")
    run.regions()      # instructions between mark 0 and 1, 2 and 3, ...

Counts are instructions, never cycles: QEMU is not cycle-accurate.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from microfit.errors import BuildError, DeviceError, ToolchainMissingError

MARK_SYMBOL = "mf_icount_mark"

__all__ = ["MARK_SYMBOL", "IcountRun", "ModelCount", "baremetal_dir", "build_baremetal",
           "build_plugin", "by_function", "cache_dir", "measure_model", "run_counted",
           "symbol_address"]


def _here() -> Path:
    return Path(str(files("microfit.icount")))


def baremetal_dir() -> Path:
    """The folder holding mf_baremetal.h, startup.c and mps2.ld."""
    return _here() / "mps2"


def cache_dir() -> Path:
    """Where the compiled plugin is kept: $MICROFIT_CACHE, else $XDG_CACHE_HOME/microfit."""
    env = os.environ.get("MICROFIT_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "microfit"


def build_plugin(cache: Path | None = None) -> Path:
    """Compile the plugin once per source version; return the shared object's path.

    The file name carries a hash of the source, so an updated plugin is rebuilt
    and parallel test workers never see a half-written file (compile to a
    temporary name, then rename).
    """
    src = _here() / "mf_icount.c"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    cache = Path(cache) if cache is not None else cache_dir()
    out = cache / f"mf_icount-{digest}.so"
    if out.is_file():
        return out
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise ToolchainMissingError("no host C compiler to build the QEMU plugin: "
                                    "sudo apt-get install gcc")
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mf_icount-", suffix=".so", dir=cache)
    os.close(fd)
    proc = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-o", tmp, str(src)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        os.unlink(tmp)
        raise BuildError(f"building the QEMU instruction-count plugin failed:\n{proc.stderr}")
    os.replace(tmp, out)
    return out


def _board(board):
    from microfit.target.boards import Board, load_board

    return board if isinstance(board, Board) else load_board(board)


def build_baremetal(sources: Sequence[Path], out: Path, board="qemu-mps2-an386",
                    include_dirs: Sequence[Path] = (), defines: Mapping[str, str] | None = None,
                    opt: str = "-O2", extra_flags: Iterable[str] = (),
                    map_file: Path | None = None) -> Path:
    """Link ``sources`` with the mps2 start-up code into the ELF ``out``, for ``board``'s CPU.

    ``main()`` returns the exit status. Each source becomes its own object
    (``<out>.obj/<stem>.o``, so a linker map, ``map_file``, names them), with
    sections split and collected (-ffunction-sections, --gc-sections) as in
    microfit's firmware.
    """
    b = _board(board)
    cc = shutil.which(b.toolchain.cc)
    if cc is None:
        raise ToolchainMissingError(f"{b.toolchain.cc} not found; sudo apt-get install "
                                    f"{' '.join(b.toolchain.apt)}")
    bm = baremetal_dir()
    out = Path(out)
    obj_dir = out.parent / (out.name + ".obj")
    obj_dir.mkdir(parents=True, exist_ok=True)
    cflags = [*b.cpu_flags, opt, "-std=c99", "-Wall", "-Wextra", "-Werror",
              "-ffunction-sections", "-fdata-sections", f"-I{bm}"]
    cflags += [f"-I{d}" for d in include_dirs]
    for name, value in (defines or {}).items():
        cflags.append(f"-D{name}" if value in ("", None) else f"-D{name}={value}")
    cflags += list(extra_flags)
    objects = []
    all_sources = [bm / "startup.c", *(Path(s) for s in sources)]
    stems = [s.stem for s in all_sources]
    for src in all_sources:
        stem = src.stem if stems.count(src.stem) == 1 else f"{src.parent.name}_{src.stem}"
        obj = obj_dir / f"{stem}.o"
        _run_build([cc, *cflags, "-c", str(src), "-o", str(obj)])
        objects.append(obj)
    link = [cc, *b.cpu_flags, "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs",
            "-Wl,--gc-sections", f"-Wl,--require-defined={MARK_SYMBOL}",
            f"-Wl,-T,{bm / 'mps2.ld'}"]
    if map_file is not None:
        link.append(f"-Wl,-Map,{map_file}")
    _run_build([*link, *(str(o) for o in objects), "-o", str(out)])
    return out


def _run_build(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "LC_ALL": "C"})
    if proc.returncode != 0:
        raise BuildError(f"bare-metal build failed (exit {proc.returncode}):\n  {' '.join(cmd)}\n"
                         f"{proc.stderr.strip()}")


def symbol_address(elf: Path, name: str) -> int:
    """Address of a function in an ELF, without the Thumb bit."""
    from elftools.elf.elffile import ELFFile

    with open(elf, "rb") as fh:
        symtab = ELFFile(fh).get_section_by_name(".symtab")
        found = symtab.get_symbol_by_name(name) if symtab is not None else None
        if not found:
            raise BuildError(f"{elf} has no symbol {name}: link the mps2 start-up code "
                             "(microfit.icount.build_baremetal) or define it")
        return int(found[0]["st_value"]) & ~1


@dataclass
class IcountRun:
    """One emulation: the instruction count at every marker call, and what it printed."""

    marks: list[int]
    total: int
    uart: bytes
    returncode: int
    profile: dict[int, int] | None = None  # block start address -> instructions

    def regions(self) -> list[int]:
        """Instructions between marks 0 and 1, 2 and 3, ... (marks taken in pairs)."""
        if len(self.marks) % 2:
            raise DeviceError(f"odd number of marks ({len(self.marks)}): a region never ended")
        return [b - a for a, b in zip(self.marks[0::2], self.marks[1::2], strict=True)]


def run_counted(elf: Path, board="qemu-mps2-an386", timeout: float = 300,
                mark_symbol: str = MARK_SYMBOL, check: bool = True,
                profile: bool = False) -> IcountRun:
    """Run ``elf`` in QEMU with the counting plugin until it exits.

    QEMU runs without -icount (the plugin counts exactly by itself, and
    -icount could replay I/O instructions). With ``check``, a non-zero exit
    status raises DeviceError with the UART output. With ``profile``, the run
    also records instructions per block address (see :func:`by_function`).
    """
    b = _board(board)
    emu = b.emulator
    if emu is None or emu.kind != "qemu":
        raise DeviceError(f"board {b.name} has no QEMU emulator section in its board file")
    if shutil.which(emu.program) is None:
        raise ToolchainMissingError(f"{emu.program} not found; sudo apt-get install "
                                    f"{' '.join(emu.apt) or emu.program}")
    plugin = build_plugin()
    mark = symbol_address(elf, mark_symbol)
    with tempfile.TemporaryDirectory() as tmp:
        counts = Path(tmp) / "counts.txt"
        cmd = [emu.program, "-M", emu.machine, *(["-cpu", emu.cpu] if emu.cpu else []),
               "-kernel", str(elf), "-display", "none", "-monitor", "none", "-serial", "stdio",
               "-semihosting-config", "enable=on,target=native",
               "-plugin", f"{plugin},mark={mark:#x},out={counts}" + (",profile=on" * profile)]
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise DeviceError(f"{elf} did not finish within {timeout:.0f} s in QEMU "
                              f"({b.name})") from exc
        if not counts.is_file():
            raise DeviceError(f"the counting plugin wrote nothing (QEMU exit {proc.returncode}):\n"
                              f"{proc.stderr.decode(errors='replace')[-2000:]}")
        marks, total, blocks = [], -1, {}
        for line in counts.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "mark":
                marks.append(int(value))
            elif key == "total":
                total = int(value)
            elif key == "tb":
                addr, n = value.split()
                blocks[int(addr, 16)] = int(n)
            elif key == "error":
                raise DeviceError(f"counting plugin: {value}")
    run = IcountRun(marks, total, proc.stdout, proc.returncode, blocks if profile else None)
    if check and proc.returncode != 0:
        raise DeviceError(f"{elf} exited with status {proc.returncode} in QEMU ({b.name}); "
                          f"it printed:\n{proc.stdout.decode(errors='replace')[-2000:]}\n"
                          f"{proc.stderr.decode(errors='replace')[-1000:]}")
    return run


def by_function(elf: Path, profile: dict[int, int]) -> dict[str, int]:
    """Attribute a block profile to the ELF's functions (inlined code counts for its caller)."""
    import bisect

    from elftools.elf.elffile import ELFFile

    funcs = []
    with open(elf, "rb") as fh:
        symtab = ELFFile(fh).get_section_by_name(".symtab")
        for sym in symtab.iter_symbols() if symtab is not None else []:
            if sym["st_info"]["type"] == "STT_FUNC" and sym["st_size"] > 0:
                funcs.append((int(sym["st_value"]) & ~1, int(sym["st_size"]), sym.name))
    funcs.sort()
    starts = [f[0] for f in funcs]
    out: dict[str, int] = {}
    for addr, n in profile.items():
        i = bisect.bisect_right(starts, addr) - 1
        name = funcs[i][2] if i >= 0 and addr < funcs[i][0] + funcs[i][1] else f"?{addr:#x}"
        out[name] = out.get(name, 0) + n
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


@dataclass
class ModelCount:
    """Instructions of a generated model on one emulated board.

    ``per_inference``: exact instructions of each model_invoke() call.
    ``per_layer``: layer index -> instructions of its kernel call on the first
    input, measured in a second build whose MODEL_LAYER_BEGIN/END hooks call
    the marker (each figure includes about three instructions of the hooks).
    ``outputs``: the int8 outputs, one row per input. ``map_file``: the
    linker map of the build without hooks (see microfit.codegen.codesize).
    """

    board: str
    per_inference: list[int]
    per_layer: dict[int, int]
    outputs: np.ndarray
    map_file: Path | None = None


def _inputs_header(inputs: np.ndarray) -> str:
    rows = []
    for x in inputs:
        vals = ", ".join(str(int(v)) for v in x.ravel())
        rows.append(f"    {{{vals}}},")
    return (f"#include <stdint.h>\n#include \"model.h\"\n#define MF_BENCH_N_INPUTS {len(inputs)}u\n"
            f"static const int8_t mf_bench_inputs[{len(inputs)}][MODEL_INPUT_SIZE] = {{\n"
            + "\n".join(rows) + "\n};\n")


def _parse_outputs(uart: bytes, n: int, size: int) -> np.ndarray:
    lines = uart.decode(errors="replace").split()
    outs = [bytes.fromhex(line[1:]) for line in lines if line.startswith("O")]
    if "END" not in lines or len(outs) != n or any(len(o) != size for o in outs):
        raise DeviceError(f"the model firmware did not print {n} outputs of {size} bytes:\n"
                          f"{uart[-2000:].decode(errors='replace')}")
    return np.frombuffer(b"".join(outs), dtype=np.int8).reshape(n, size)


def _layer_indices(model_c: Path) -> list[int]:
    import re

    return [int(i) for i in re.findall(r"MODEL_LAYER_BEGIN\((\d+)\)", model_c.read_text())]


def measure_model(generated: Path, inputs: np.ndarray, board="qemu-mps2-an386",
                  per_layer: bool = True, work_dir: Path | None = None,
                  defines: Mapping[str, str] | None = None, opt: str = "-O2") -> ModelCount:
    """Build a generated model (model.h, model.c, model_weights.c) bare-metal and count it.

    ``inputs`` is int8 [N, MODEL_INPUT_SIZE]. Define MF_SINGLE_ROUNDING in
    ``defines`` for a single-rounding model.
    """
    from microfit.toolchain.host import runtime_dir, runtime_sources

    generated = Path(generated)
    inputs = np.ascontiguousarray(inputs, dtype=np.int8).reshape(len(inputs), -1)
    b = _board(board)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(work_dir) if work_dir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "mf_bench_inputs.h").write_text(_inputs_header(inputs))
        sources = [baremetal_dir() / "model_main.c", generated / "model.c",
                   generated / "model_weights.c", *runtime_sources()]
        includes = [work, generated, runtime_dir() / "include"]
        map_file = work / "model.map"
        elf = build_baremetal(sources, work / "model.elf", b, includes, defines, opt,
                              map_file=map_file)
        run = run_counted(elf, b)
        per_inference = run.regions()
        if len(per_inference) != len(inputs):
            raise DeviceError(f"expected {len(inputs)} counted inferences, got {len(per_inference)}")
        outputs = _parse_outputs(run.uart, len(inputs), int(outputs_size(generated)))
        layers: dict[int, int] = {}
        if per_layer:
            hooks = {**(defines or {}), "MODEL_LAYER_BEGIN(i)": "mf_icount_mark()",
                     "MODEL_LAYER_END(i)": "mf_icount_mark()"}
            elf_l = build_baremetal(sources, work / "model_layers.elf", b, includes, hooks, opt,
                                    extra_flags=["-include", "mf_baremetal.h"])
            marks = run_counted(elf_l, b).marks
            idx = _layer_indices(generated / "model.c")
            per_input = 2 + 2 * len(idx)
            if len(marks) != per_input * len(inputs):
                raise DeviceError(f"layer marks: expected {per_input * len(inputs)}, got {len(marks)}")
            first = marks[1:per_input - 1]
            layers = {i: first[2 * k + 1] - first[2 * k] for k, i in enumerate(idx)}
        kept_map = None
        if work_dir is not None:
            kept_map = map_file
    return ModelCount(b.name, per_inference, layers, outputs, kept_map)


def outputs_size(generated: Path) -> int:
    import re

    m = re.search(r"#define MODEL_OUTPUT_SIZE\s+(\d+)", (Path(generated) / "model.h").read_text())
    if m is None:
        raise BuildError(f"{generated}/model.h defines no MODEL_OUTPUT_SIZE")
    return int(m.group(1))
