"""Every shipped board: its file loads, its firmware cross-compiles, its boot image is right."""

from __future__ import annotations

import dataclasses
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from microfit.emulate import emulator_session
from microfit.errors import BoardNotFoundError
from microfit.harness.client import DeviceClient
from microfit.target.boards import list_boards, load_board
from microfit.target.project import render_project
from microfit.toolchain.firmware import build_firmware

ECHO = Path(__file__).parent / "fixtures" / "echo_model"
REQUIRED = (
    "qemu-mps2-an385", "qemu-mps2-an386", "qemu-mps2-an500", "arduino-uno", "simavr-uno",
    "arduino-mega2560", "nucleo-f446re", "nrf52840-dk", "rpi-pico", "stm32f746g-disco", "host",
)
CROSS_BOARDS = [b.name for b in list_boards() if b.family != "host"]


def skip_without_toolchain(board) -> None:
    if shutil.which(board.toolchain.cc) is None:
        pytest.skip(f"{board.toolchain.cc} missing for {board.name}: apt-get install "
                    + " ".join(board.toolchain.apt))


def test_every_board_the_issue_lists_ships_and_loads():
    names = {b.name for b in list_boards()}
    assert set(REQUIRED) <= names
    for board in list_boards():
        row = board.summary()
        assert row["flash_kb"] > 0 and row["ram_kb"] > 0 and row["counter"]
        assert row["runs_on"]


def test_real_cortex_m_boards_count_cycles_and_qemu_counts_instructions():
    for board in list_boards():
        if board.family != "cortex-m":
            continue
        if board.emulator is not None:
            assert (board.counter.kind, board.counter.source) == ("instructions", "systick")
        elif board.core == "cortex-m0plus":  # no DWT on ARMv6-M
            assert (board.counter.kind, board.counter.source) == ("cycles", "systick")
        else:
            assert (board.counter.kind, board.counter.source) == ("cycles", "dwt")


@pytest.mark.parametrize("name", CROSS_BOARDS)
def test_every_board_builds_the_echo_model_within_its_limits(name, tmp_path, request):
    board = load_board(name)
    skip_without_toolchain(board)
    if name == "rpi-pico":  # built once, shared with the boot image tests
        result, _ = request.getfixturevalue("pico_build")
    else:
        result = build_firmware(render_project(board, ECHO, tmp_path / "fw"), board)
    assert 0 < result.flash_bytes <= board.flash.size
    assert 0 < result.ram_bytes <= board.ram.size
    assert result.arena_bytes == 74
    assert result.elf.with_suffix(".hex").is_file()
    if board.family == "cortex-m":
        # The vector table sits where the core (or the RP2040's boot stage) looks for it.
        nm = subprocess.run([board.toolchain.prefix + "nm", str(result.elf)], capture_output=True,
                            text=True, check=True).stdout
        table = next(int(line.split()[0], 16) for line in nm.splitlines()
                     if line.endswith(" mf_vector_table"))
        offset = 0x100 if board.raw.get("boot2") else 0
        assert table == board.flash.origin + offset


def test_select_folders_pick_the_uart_driver_and_counter(tmp_path):
    pico = render_project(load_board("rpi-pico"), ECHO, tmp_path / "pico")
    assert (pico / "platform" / "mf_uart_rp2040.c").is_file()
    assert (pico / "platform" / "mf_boot2_rp2040.c").is_file()
    assert not (pico / "platform" / "mf_uart_cmsdk.c").exists()
    assert "#define MF_COUNTER_DWT 0" in (pico / "platform" / "mf_target.h").read_text()
    nucleo = render_project(load_board("nucleo-f446re"), ECHO, tmp_path / "nucleo")
    target = (nucleo / "platform" / "mf_target.h").read_text()
    assert "#define MF_COUNTER_DWT 1" in target and "#define MF_UART_IP_VERSION 1" in target
    assert "{0x40023840UL, 17u}" in target  # RCC APB1ENR.USART2EN
    assert "{0x40020000UL, 2u, 7u}" in target  # PA2, AF7
    assert not (nucleo / "platform" / "mf_boot2_rp2040.c").exists()
    assert not (nucleo / "tools").exists()


def test_unknown_uart_kind_names_the_supported_ones(tmp_path):
    board = load_board("nucleo-f446re")
    raw = dict(board.raw)
    raw["uart"] = dict(raw["uart"], kind="esp32-uart")
    with pytest.raises(BoardNotFoundError, match="esp32-uart.*stm32-usart"):
        render_project(dataclasses.replace(board, raw=raw), ECHO, tmp_path / "fw")


def _crc32_mpeg2(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


@pytest.fixture(scope="module")
def pico_build(tmp_path_factory):
    board = load_board("rpi-pico")
    skip_without_toolchain(board)
    out = tmp_path_factory.mktemp("pico")
    return build_firmware(render_project(board, ECHO, out), board), out


def test_rp2040_boot_stage_carries_the_crc_the_boot_rom_checks(pico_build):
    assert _crc32_mpeg2(b"123456789") == 0x0376E6E7  # CRC-32/MPEG-2 check value
    result, out = pico_build
    image = (out / "firmware.bin").read_bytes()
    boot2 = image[:256]
    assert struct.unpack("<I", boot2[252:])[0] == _crc32_mpeg2(boot2[:252])
    assert any(boot2[:252])
    sys.path.insert(0, str(out / "tools"))
    try:
        import boot2_checksum  # the project's own copy, as `make` runs it
    finally:
        sys.path.pop(0)
    assert boot2_checksum.crc32_mpeg2(b"123456789") == 0x0376E6E7


def test_rp2040_uf2_blocks_cover_the_image_at_flash_addresses(pico_build):
    _, out = pico_build
    image = (out / "firmware.bin").read_bytes()
    uf2 = (out / "firmware.uf2").read_bytes()
    blocks = [uf2[i:i + 512] for i in range(0, len(uf2), 512)]
    assert len(uf2) % 512 == 0 and len(blocks) == (len(image) + 255) // 256
    rebuilt = b""
    for index, block in enumerate(blocks):
        magic0, magic1, flags, addr, size, number, total, family = struct.unpack("<8I", block[:32])
        assert (magic0, magic1, struct.unpack("<I", block[508:])[0]) == (
            0x0A324655, 0x9E5D5157, 0x0AB16F30)
        assert flags & 0x2000 and family == 0xE48BFF56  # RP2040 family ID present
        assert (addr, size, number, total) == (0x10000000 + 256 * index, 256, index, len(blocks))
        rebuilt += block[32:32 + size]
    assert rebuilt[:len(image)] == image


def test_host_board_serves_the_protocol_on_a_pty(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("gcc missing: apt-get install gcc")
    import importlib.util

    spec = importlib.util.spec_from_file_location("echo_twin_boards", ECHO / "twin.py")
    twin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(twin)
    board = load_board("host")
    result = build_firmware(render_project(board, ECHO, tmp_path / "fw"), board)
    x = bytes(range(64))
    with emulator_session(board, result.elf) as url, DeviceClient(url) as client:
        info = client.hello(expected_hash=twin.MODEL_HASH)
        out = client.infer(x)
    assert info.counter_kind == "nanoseconds"
    assert out.output == twin.echo_reference(x).tobytes()
