"""Board files, project rendering, the cross build, and the fit check."""

from __future__ import annotations

import dataclasses
import filecmp
import shutil
from pathlib import Path

import pytest

from microfit.emulate.qemu import QemuSession
from microfit.errors import (
    BoardNotFoundError,
    FitError,
    RunFolderError,
    ToolchainMissingError,
)
from microfit.target.boards import InvalidBoardFileError, MemoryRegion, list_boards, load_board
from microfit.target.project import render_project
from microfit.toolchain.firmware import build_firmware, check_fit, format_bytes

ECHO = Path(__file__).parent / "fixtures" / "echo_model"
QEMU_BOARDS = ("qemu-mps2-an385", "qemu-mps2-an386", "qemu-mps2-an500")

needs_arm_gcc = pytest.mark.skipif(
    shutil.which("arm-none-eabi-gcc") is None,
    reason="arm-none-eabi-gcc missing: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi",
)


# ------------------------------------------------------------------ boards


def test_shipped_qemu_boards_load_with_their_numbers():
    names = [b.name for b in list_boards()]
    for name in QEMU_BOARDS:
        assert name in names
    board = load_board("qemu-mps2-an386")
    assert board.family == "cortex-m" and board.core == "cortex-m4"
    assert "-mcpu=cortex-m4" in board.cpu_flags and "-mthumb" in board.cpu_flags
    assert board.clock_hz == 25_000_000
    assert board.flash == MemoryRegion(0x0, 4 * 1024 * 1024)
    assert board.ram == MemoryRegion(0x2000_0000, 4 * 1024 * 1024)
    assert (board.uart.kind, board.uart.base, board.uart.baud) == ("cmsdk", 0x4000_4000, 115200)
    assert board.emulator.program == "qemu-system-arm"
    assert board.emulator.machine == "mps2-an386"
    assert ["-icount", "shift=0"] == list(board.emulator.args)
    row = board.summary()
    assert (row["name"], row["flash_kb"], row["ram_kb"]) == ("qemu-mps2-an386", 4096, 4096)


@pytest.mark.parametrize("name", QEMU_BOARDS)
def test_qemu_instruction_counter_matches_icount_arithmetic(name):
    # -icount shift=0: 1 ns per instruction, so one tick = 1e9 / clock instructions.
    board = load_board(name)
    assert board.counter.kind == "instructions"
    assert board.counter.per_tick == 1_000_000_000 // board.clock_hz == 40
    assert board.counter.resolution == 40


def test_unknown_board_lists_available_names():
    with pytest.raises(BoardNotFoundError) as info:
        load_board("arduino-nope")
    message = str(info.value)
    assert "arduino-nope" in message and "qemu-mps2-an386" in message


def test_board_file_path_loads_and_bad_file_names_missing_key(tmp_path):
    text = (Path(__file__).parents[1] / "targets" / "qemu-mps2-an386.toml").read_text()
    good = tmp_path / "my_board.toml"
    good.write_text(text.replace('name = "qemu-mps2-an386"', 'name = "my-board"'))
    assert load_board(good).name == "my-board"
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("clock_hz = 25_000_000", ""))
    with pytest.raises(InvalidBoardFileError, match="clock_hz"):
        load_board(bad)


# ------------------------------------------------------------------ rendering


def test_render_project_writes_a_complete_deterministic_project(tmp_path):
    board = load_board("qemu-mps2-an386")
    a = render_project(board, ECHO, tmp_path / "a")
    b = render_project(board, ECHO, tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    for rel in ("Makefile", "link.ld", "model/model.h", "model/model.c", "model/model_weights.c",
                "protocol/mf_protocol.c", "protocol/mf_frame.c", "protocol/mf_board.h",
                "platform/startup.c", "platform/main.c", "runtime/mf_fixedpoint.h"):
        assert Path(rel) in files, rel
    assert not any(p.suffix == ".j2" for p in files)
    for rel in files:
        assert filecmp.cmp(a / rel, b / rel, shallow=False), rel
    link = (a / "link.ld").read_text()
    assert f"LENGTH = {4 * 1024 * 1024}" in link and "_stack_size = 8192" in link
    board_h = (a / "protocol" / "mf_board.h").read_text()
    assert '"qemu-mps2-an386"' in board_h and "MF_COUNTER_PER_TICK    40UL" in board_h
    makefile = (a / "Makefile").read_text()
    assert "-mcpu=cortex-m4" in makefile and "model/model.c" in makefile


def test_render_replaces_files_of_an_earlier_model(tmp_path):
    board = load_board("qemu-mps2-an386")
    model = tmp_path / "model"
    shutil.copytree(ECHO, model)
    (model / "extra_layer.c").write_text("int extra_layer;\n")
    out = render_project(board, model, tmp_path / "fw")
    assert (out / "model" / "extra_layer.c").is_file()
    (model / "extra_layer.c").unlink()
    render_project(board, model, out)
    assert not (out / "model" / "extra_layer.c").exists()
    assert "extra_layer" not in (out / "Makefile").read_text()


def test_render_without_model_sources_raises_run_folder_error(tmp_path):
    with pytest.raises(RunFolderError, match="model.h"):
        render_project(load_board("qemu-mps2-an386"), tmp_path, tmp_path / "fw")


# ------------------------------------------------------------------ fit and toolchain errors


def test_fit_error_states_need_capacity_and_overshoot():
    board = dataclasses.replace(load_board("qemu-mps2-an386"), flash=MemoryRegion(0, 512 * 1024))
    with pytest.raises(FitError) as info:
        check_fit(600 * 1024, 1000, board)
    message = str(info.value)
    assert "needs 600 KB flash, board qemu-mps2-an386 has 512 KB: 88 KB over" in message
    assert "614,400 > 524,288 bytes" in message
    check_fit(512 * 1024, 1000, board)  # exactly full fits


@pytest.mark.parametrize("n, text", [(512, "512 B"), (1536, "1.5 KB"), (90112, "88 KB"),
                                     (4 * 1024 * 1024, "4 MB")])
def test_format_bytes(n, text):
    assert format_bytes(n) == text


def test_missing_cross_compiler_names_the_packages(tmp_path, monkeypatch):
    board = load_board("qemu-mps2-an386")
    project = render_project(board, ECHO, tmp_path / "fw")
    monkeypatch.setenv("PATH", "")
    with pytest.raises(ToolchainMissingError) as info:
        build_firmware(project, board)
    assert "arm-none-eabi-gcc" in str(info.value)
    assert "gcc-arm-none-eabi libnewlib-arm-none-eabi" in str(info.value)


def test_missing_qemu_names_the_package(tmp_path, monkeypatch):
    elf = tmp_path / "firmware.elf"
    elf.write_bytes(b"\x7fELF")
    monkeypatch.setenv("PATH", "")
    with pytest.raises(ToolchainMissingError, match="qemu-system-arm"):
        QemuSession(load_board("qemu-mps2-an386"), elf).start()


@needs_arm_gcc
def test_build_measures_sections_and_is_reproducible_across_folders(tmp_path):
    board = load_board("qemu-mps2-an386")
    first = build_firmware(render_project(board, ECHO, tmp_path / "a"), board)
    second = build_firmware(render_project(board, ECHO, tmp_path / "b"), board)
    s = first.sections
    assert first.flash_bytes == s[".isr_vector"] + s[".text"] + s.get(".rodata", 0) + s.get(".data", 0)
    assert first.ram_bytes == s[".stack"] + s.get(".data", 0) + s.get(".bss", 0)
    assert first.stack_bytes == board.stack_size
    assert first.arena_bytes == 74
    assert 1000 < first.flash_bytes < 64 * 1024
    assert (tmp_path / "a" / "firmware.elf").read_bytes() == (tmp_path / "b" / "firmware.elf").read_bytes()
    assert second.flash_bytes == first.flash_bytes
    assert "flash" in first.summary()


@needs_arm_gcc
def test_firmware_too_big_for_board_raises_fit_error_with_numbers(tmp_path):
    tiny = dataclasses.replace(
        load_board("qemu-mps2-an386"),
        flash=MemoryRegion(0x0, 1024),
        ram=MemoryRegion(0x2000_0000, 2048),
    )
    with pytest.raises(FitError) as info:
        build_firmware(render_project(tiny, ECHO, tmp_path / "fw"), tiny)
    message = str(info.value)
    assert "flash, board qemu-mps2-an386 has 1 KB" in message
    assert "RAM, board qemu-mps2-an386 has 2 KB" in message
    assert "over" in message


@needs_arm_gcc
def test_compile_error_raises_build_error_with_compiler_output(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(ECHO, model)
    (model / "model.c").write_text((ECHO / "model.c").read_text() + "\nint broken = ;\n")
    board = load_board("qemu-mps2-an386")
    from microfit.errors import BuildError

    with pytest.raises(BuildError, match="model/model.c"):
        build_firmware(render_project(board, model, tmp_path / "fw"), board)
