"""Run a batch of kernel calls in one firmware on an emulated board, and read back the outputs.

The test writes C declarations (constants with MF_CONST: flash / PROGMEM on
AVR, as generated code keeps them) and the calls of one
``mf_test_run_cases()``; the board harness (tests/c/avr_harness.c or
tests/c/mps2_harness.c) provides ``mf_test_arena``, ``mf_test_load`` (copy a
constant input into the arena) and ``mf_test_emit`` (print one case's output
as ``O<case> <hex>``), then ``END``. Boards: ``atmega328p`` (simavr),
``qemu-mps2-an386`` (Cortex-M4) and ``qemu-mps2-an385`` (Cortex-M3, trapping
unaligned accesses as a Cortex-M0 would, with an alignment-safe memcpy and
memset as a Cortex-M0's libc has: tests/c/mps2_aligned_libc.c). A missing
tool skips, naming the package.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from microfit.toolchain.host import runtime_dir

C_DIR = Path(__file__).parent / "c"
AVR_ARENA = 1280  # bytes of mf_test_arena in avr_harness.c
MPS2_ARENA = 65536  # in mps2_harness.c
BOARDS = ("atmega328p", "qemu-mps2-an386", "qemu-mps2-an385")


def c_array(name: str, a: np.ndarray) -> str:
    """A constant int8 or int32 array in flash, word-aligned on Cortex-M."""
    ctype = {np.dtype(np.int8): "int8_t", np.dtype(np.int32): "int32_t"}[a.dtype]
    vals = ", ".join(str(int(v)) for v in a.ravel()) or "0"
    return f"static const {ctype} {name}[{max(a.size, 1)}] MF_TEST_ALIGN MF_CONST = {{{vals}}};"


def program(decls: Sequence[str], calls: Sequence[str]) -> str:
    """The C source of ``mf_test_run_cases()``: ``decls`` at file scope, then ``calls``."""
    return "\n".join([
        "#include <stddef.h>", "#include <stdint.h>", '#include "mf_runtime.h"', "",
        "#if defined(__AVR__)", "#define MF_TEST_ALIGN", "#else",
        "#define MF_TEST_ALIGN __attribute__((aligned(4)))", "#endif", "",
        "extern int8_t mf_test_arena[];",
        "void mf_test_load(int8_t *dst, const int8_t *src, uint16_t n);",
        "void mf_test_emit(uint16_t case_index, const int8_t *out, uint16_t n);",
        "void mf_test_run_cases(void);", "",
        *decls, "", "void mf_test_run_cases(void)", "{", *("    " + c for c in calls), "}", ""])


def _need(*tools: tuple[str, str]) -> None:
    for tool, package in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed: apt-get install {package}")


def _parse(text: str, what: str) -> dict[int, np.ndarray]:
    lines = text.splitlines()
    assert lines and lines[-1] == "END", f"firmware did not finish:\n{what}"
    outputs = {}
    for line in lines[:-1]:
        m = re.fullmatch(r"O([0-9a-f]{4}) ([0-9a-f]*)", line)
        assert m, f"unexpected UART line {line!r}"
        outputs[int(m.group(1), 16)] = np.frombuffer(bytes.fromhex(m.group(2)), dtype=np.int8)
    return outputs


def run_cases(tmp_path: Path, board: str, source: str,
              kernel_sources: Sequence[Path]) -> dict[int, np.ndarray]:
    """Build ``source`` with the runtime files ``kernel_sources`` for ``board``, run it,
    return case index -> output bytes."""
    src = tmp_path / "cases.c"
    src.write_text(source)
    inc = runtime_dir() / "include"
    if board == "atmega328p":
        _need(("avr-gcc", "gcc-avr avr-libc"), ("simavr", "simavr"))
        elf = tmp_path / "cases.elf"
        cmd = ["avr-gcc", "-mmcu=atmega328p", "-Os", "-std=c99", "-Wall", "-Wextra", "-Werror",
               "-ffunction-sections", "-fdata-sections", "-Wl,--gc-sections", f"-I{inc}",
               str(C_DIR / "avr_harness.c"), str(src), *(str(s) for s in kernel_sources),
               "-o", str(elf)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        try:
            sim = subprocess.run(["simavr", "-m", "atmega328p", "-f", "16000000", str(elf)],
                                 capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"the AVR firmware did not finish within {exc.timeout} s of simulation")
        # simavr prints UART text wrapped in colour codes, '\n' as '.', long lines split.
        text = "".join(piece[:-1] + "\n" if piece.endswith(".") else piece
                       for piece in re.sub(r"\x1b\[[0-9;]*m", "", sim.stderr).split("\n"))
        return _parse(text, sim.stderr[-2000:])
    from microfit.icount import build_baremetal, run_counted

    _need(("arm-none-eabi-gcc", "gcc-arm-none-eabi libnewlib-arm-none-eabi"),
          ("qemu-system-arm", "qemu-system-arm"))
    defines: dict[str, str] = {}
    flags: list[str] = []
    harness = [C_DIR / "mps2_harness.c"]
    if board == "qemu-mps2-an385":  # strict alignment, as on a Cortex-M0
        defines["MF_TEST_TRAP_UNALIGNED"] = "1"
        flags.append("-mno-unaligned-access")
        harness.append(C_DIR / "mps2_aligned_libc.c")  # as a Cortex-M0's libc (see there)
    elf = build_baremetal([*harness, src, *kernel_sources],
                          tmp_path / "cases.elf", board, [inc], defines, extra_flags=flags)
    run = run_counted(elf, board, timeout=120)
    return _parse(run.uart.decode(errors="replace"), repr(run.uart[-2000:]))


def assert_outputs(outputs: dict[int, np.ndarray], expected: Sequence[np.ndarray],
                   labels: Sequence[str] = ()) -> None:
    """Every case printed once, each byte-equal to its expected output."""
    assert sorted(outputs) == list(range(len(expected)))
    for i, want in enumerate(expected):
        label = labels[i] if labels else ""
        np.testing.assert_array_equal(outputs[i], np.ascontiguousarray(want).ravel(),
                                      err_msg=f"case {i} {label}")
