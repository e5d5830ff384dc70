"""The generated model as an Arduino library, a PlatformIO project, and a sketch build.

`export_arduino_library` writes a folder the Arduino IDE and arduino-cli take
as is (library.properties, src/, examples/validate, examples/classify) with a
platformio.ini beside them. The library holds the model, the kernels and the
device protocol with a HAL on the Arduino API (Serial, micros()), so the
validate example answers `microfit validate --port ...` on any Arduino.

`build_sketch_avr` compiles one of its examples for an AVR board with
Debian's Arduino AVR core (arduino-core-avr) and avr-gcc, the way the IDE
would, without the IDE: what microfit uses to check that the export builds,
and what runs in simavr in the tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import jinja2

from microfit.errors import BuildError, RunFolderError, ToolchainMissingError
from microfit.target.boards import Board

DEFAULT_LIBRARY = "microfit_model"
# Debian's arduino-core-avr puts the core here.
ARDUINO_AVR_CORE = Path("/usr/share/arduino/hardware/arduino/avr")
_VARIANTS = {"atmega328p": "standard", "atmega2560": "mega"}
_BOARD_MACROS = {"atmega328p": "ARDUINO_AVR_UNO", "atmega2560": "ARDUINO_AVR_MEGA2560"}


def _templates() -> Traversable:
    return resources.files("microfit.firmware_templates")


def _walk(node: Traversable, prefix: Path) -> list[tuple[Path, Traversable]]:
    found = []
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.name.startswith((".", "__")):
            continue
        if child.is_dir():
            found.extend(_walk(child, prefix / child.name))
        else:
            found.append((prefix / child.name, child))
    return found


def _c_bytes(values: Sequence[int], per_line: int = 16) -> str:
    rows = [", ".join(str(int(v)) for v in values[i:i + per_line])
            for i in range(0, len(values), per_line)]
    return ",\n".join("    " + row for row in rows) or "    0"


def _model_facts(model_dir: Path) -> dict[str, Any]:
    header = (model_dir / "model.h").read_text(errors="replace")
    source = "\n".join(p.read_text(errors="replace") for p in sorted(model_dir.glob("*.c")))

    def define(name: str) -> int:
        found = re.search(rf"#define\s+{name}\s+\(?(-?\d+)", header)
        return int(found.group(1)) if found else 0

    hash_match = re.search(r"model_hash\[8\][^{]*\{([^}]*)\}", source)
    model_hash = (
        "".join(f"{int(v, 16):02x}" for v in re.findall(r"0x([0-9a-fA-F]{2})", hash_match.group(1)))
        if hash_match else "unknown"
    )
    return {"input_size": define("MODEL_INPUT_SIZE"), "arena_size": define("MODEL_ARENA_SIZE"),
            "model_hash": model_hash}


def export_arduino_library(
    board: Board,
    model_dir: Path,
    out_dir: Path,
    library_name: str = DEFAULT_LIBRARY,
    sample: Sequence[int] | None = None,
    sample_label: int | None = None,
    sample_index: int = 0,
) -> Path:
    """Write the Arduino library for the model in `model_dir`; return its folder.

    `board` picks the PlatformIO environment and the name the device
    reports; the library itself builds for any architecture. `sample` (int8
    values, MODEL_INPUT_SIZE of them) becomes the classify example's input.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "model.h").is_file():
        raise RunFolderError(f"{model_dir} has no model.h: generate the model first (microfit generate)")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", library_name):
        raise ValueError(f"library name {library_name!r} must be a C identifier")
    facts = _model_facts(model_dir)
    if sample is None:
        sample = [0] * facts["input_size"]
    if len(sample) != facts["input_size"]:
        raise ValueError(f"sample has {len(sample)} values, the model takes {facts['input_size']}")
    arduino = dict(board.raw.get("arduino", {}))
    context = {
        "board": board,
        "library_name": library_name,
        "guard": library_name.upper() + "_H",
        "board_label": board.name[:32],
        "baud": board.uart.baud,
        "architectures": "*",
        "model_hash": facts["model_hash"],
        "arena_size": facts["arena_size"],
        "sample_c": _c_bytes(list(sample)),
        "sample_label": sample_label,
        "sample_index": sample_index,
        "env_name": board.name.replace("-", "_"),
        "pio_board": arduino.get("platformio_board", "uno"),
        "pio_platform": arduino.get("platformio_platform", "atmelavr"),
    }
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    files: dict[Path, bytes] = {}
    root = _templates()
    for rel, node in _walk(root / "arduino", Path(".")):
        if rel.suffix == ".j2":
            rel = rel.with_suffix("")
            if rel.name == "library.h":
                rel = rel.with_name(f"{library_name}.h")
            files[rel] = env.from_string(node.read_text(encoding="utf-8")).render(**context).encode()
        else:
            files[rel] = node.read_bytes()
    # The protocol's C code comes as is; its mf_board.h is the arduino
    # template's (micros() counter, Serial), not the rendered one.
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and path.suffix in (".c", ".h"):
            files[Path("src", path.name)] = path.read_bytes()
    for sub in ("include", "src"):
        folder = root / "runtime" / sub
        for child in sorted(folder.iterdir(), key=lambda c: c.name):
            if child.name.endswith((".c", ".h")):
                files[Path("src", child.name)] = child.read_bytes()
    for child in sorted((root / "common").iterdir(), key=lambda c: c.name):
        if child.name.endswith((".c", ".h")) and child.name != "mf_board.h":
            files[Path("src", child.name)] = child.read_bytes()

    lib_dir = Path(out_dir) / library_name
    if lib_dir.exists():
        shutil.rmtree(lib_dir)
    for rel, data in sorted(files.items()):
        dest = lib_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    return lib_dir


def export_for_run(run_dir: Path, board: Board, library_name: str = DEFAULT_LIBRARY) -> Path | None:
    """Export RUN/generated as RUN/arduino/<library> for boards with an [arduino] table.

    The classify example gets the run's first test input (quantized as the
    model expects), so it prints a real prediction. Returns None for boards
    that are not Arduinos.
    """
    if "arduino" not in board.raw:
        return None
    run_dir = Path(run_dir)
    sample = label = None
    try:
        import numpy as np

        from microfit.ir.graph import Graph
        from microfit.ir.onnx_import import nchw_to_ir
        from microfit.quantize.quantize import quantize_input
        from microfit.train.data import load_splits

        splits = load_splits(run_dir / "data.npz")
        qgraph = Graph.load(run_dir / "quant.json", run_dir / "quant.npz")
        x = quantize_input(nchw_to_ir(splits.x_test[:1]), qgraph.tensors[qgraph.inputs[0]].quant)
        sample = [int(v) for v in np.asarray(x).reshape(-1)]
        label = int(splits.y_test[0])
    except (OSError, KeyError, ValueError, RunFolderError):
        sample = label = None  # a hand-made run folder: the example gets zeros
    return export_arduino_library(board, run_dir / "generated", run_dir / "arduino", library_name,
                                  sample=sample, sample_label=label)


@dataclass
class SketchBuild:
    """An example sketch compiled with the Arduino core."""

    elf: Path
    hex: Path
    log: str


def _arduino_version() -> str:
    """ARDUINO macro value of the installed core (1.8.7 -> 10807)."""
    found = re.search(r"^version=(\d+)\.(\d+)\.(\d+)",
                      (ARDUINO_AVR_CORE / "platform.txt").read_text(errors="replace"), re.M)
    if not found:
        return "10807"
    major, minor, patch = (int(g) for g in found.groups())
    return str(major * 10000 + minor * 100 + patch)


def build_sketch_avr(library_dir: Path, example: str, board: Board, out_dir: Path) -> SketchBuild:
    """Compile examples/<example> of an exported library for an AVR board with Debian's core.

    Mirrors the Arduino IDE's recipe: the .ino becomes a .cpp that includes
    Arduino.h, the library's src/ and the core are compiled with the same
    flags and linked with --gc-sections. avr-gcc 5.4 with core 1.8.7 needs
    -DDECIMAL_DIG=9 (WString.cpp uses a macro that compiler lacks).
    """
    mcu = board.raw.get("mcu")
    if board.family != "avr" or mcu not in _VARIANTS:
        raise BuildError(f"build_sketch_avr builds AVR boards (ATmega328P/2560), not {board.name}")
    if shutil.which("avr-gcc") is None:
        raise ToolchainMissingError("avr-gcc not found. Install: sudo apt-get install -y "
                                    "--no-install-recommends gcc-avr avr-libc binutils-avr")
    core = ARDUINO_AVR_CORE / "cores" / "arduino"
    if not (core / "Arduino.h").is_file():
        raise ToolchainMissingError(f"the Arduino AVR core is missing ({core}). Install: sudo "
                                    "apt-get install -y --no-install-recommends arduino-core-avr")
    library_dir, out_dir = Path(library_dir), Path(out_dir)
    sketch = library_dir / "examples" / example / f"{example}.ino"
    if not sketch.is_file():
        raise BuildError(f"{sketch} does not exist")
    out_dir.mkdir(parents=True, exist_ok=True)
    main_cpp = out_dir / f"{example}.ino.cpp"
    main_cpp.write_text(f'#include <Arduino.h>\n#line 1 "{sketch.name}"\n' + sketch.read_text())
    variant = ARDUINO_AVR_CORE / "variants" / _VARIANTS[mcu]
    common = [f"-mmcu={mcu}", f"-DF_CPU={board.clock_hz}L", f"-DARDUINO={_arduino_version()}",
              f"-D{_BOARD_MACROS[mcu]}", "-DARDUINO_ARCH_AVR", "-DDECIMAL_DIG=9", "-Os", "-g",
              "-ffunction-sections", "-fdata-sections", "-w",
              f"-I{core}", f"-I{variant}", f"-I{library_dir / 'src'}"]
    c_flags = [*common, "-std=gnu11"]
    cpp_flags = [*common, "-std=gnu++11", "-fpermissive", "-fno-exceptions",
                 "-fno-threadsafe-statics", "-Wno-error=narrowing"]
    sources = [main_cpp, *sorted((library_dir / "src").glob("*.c")),
               *sorted((library_dir / "src").glob("*.cpp")),
               *sorted(core.glob("*.c")), *sorted(core.glob("*.cpp")), *sorted(core.glob("*.S"))]
    (out_dir / "obj").mkdir(parents=True, exist_ok=True)

    def compile_one(index: int, src: Path) -> tuple[str, str]:
        obj = out_dir / "obj" / f"{index:03d}_{src.name}.o"
        if src.suffix == ".c":
            cmd = ["avr-gcc", *c_flags, "-c", str(src), "-o", str(obj)]
        elif src.suffix == ".S":
            cmd = ["avr-gcc", *common, "-x", "assembler-with-cpp", "-c", str(src), "-o", str(obj)]
        else:
            cmd = ["avr-g++", *cpp_flags, "-c", str(src), "-o", str(obj)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                              env={**os.environ, "LC_ALL": "C"})
        if proc.returncode != 0:
            raise BuildError(f"compiling {src.name} for {board.name} failed:\n{proc.stderr.strip()}")
        return str(obj), " ".join(cmd) + "\n" + proc.stdout + proc.stderr

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        done = list(pool.map(compile_one, range(len(sources)), sources))
    objects = [obj for obj, _ in done]
    log = [text for _, text in done]
    elf = out_dir / f"{example}.elf"
    cmd = ["avr-gcc", f"-mmcu={mcu}", "-Os", "-Wl,--gc-sections", "-o", str(elf), *objects, "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    log.append(" ".join(cmd) + "\n" + proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise BuildError(f"linking {example} for {board.name} failed:\n{proc.stderr.strip()}")
    hex_path = elf.with_suffix(".hex")
    subprocess.run(["avr-objcopy", "-O", "ihex", "-R", ".eeprom", str(elf), str(hex_path)],
                   check=True, capture_output=True)
    return SketchBuild(elf=elf, hex=hex_path, log="\n".join(log))


__all__ = ["DEFAULT_LIBRARY", "SketchBuild", "build_sketch_avr", "export_arduino_library",
           "export_for_run"]
