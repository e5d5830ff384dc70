"""`microfit flash`: the exact command line per board, tool choice, and the errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from microfit.cli import main
from microfit.errors import ToolchainMissingError
from microfit.flash import FlashError, flashers, plan_flash, run_flash
from microfit.target.boards import list_boards, load_board

ELF = Path("/runs/x/firmware/firmware.elf")


def nothing_installed(_name: str) -> None:
    return None


# (board, port, expected command line with nothing installed: the preferred tool)
EXPECTED = [
    ("arduino-uno", "/dev/ttyACM1",
     "avrdude -p atmega328p -c arduino -P /dev/ttyACM1 -b 115200 -D -U "
     "flash:w:/runs/x/firmware/firmware.hex:i"),
    ("arduino-mega2560", "/dev/ttyUSB0",
     "avrdude -p atmega2560 -c wiring -P /dev/ttyUSB0 -b 115200 -D -U "
     "flash:w:/runs/x/firmware/firmware.hex:i"),
    ("nucleo-f446re", None, "pyocd load --target stm32f446retx /runs/x/firmware/firmware.elf"),
    ("stm32f746g-disco", None, "pyocd load --target stm32f746nghx /runs/x/firmware/firmware.elf"),
    ("nrf52840-dk", None, "pyocd load --target nrf52840 /runs/x/firmware/firmware.elf"),
    ("rpi-pico", "/media/me/RPI-RP2", "cp /runs/x/firmware/firmware.uf2 /media/me/RPI-RP2/"),
]


@pytest.mark.parametrize("name, port, command", EXPECTED)
def test_dry_run_command_line_per_board(name, port, command):
    plan = plan_flash(load_board(name), ELF, port=port, which=nothing_installed)
    assert plan.command_line == command
    assert plan.installed == (plan.tool == "uf2")


@pytest.mark.parametrize("name, tool, command", [
    ("nucleo-f446re", "openocd",
     "openocd -f board/st_nucleo_f4.cfg -c 'program /runs/x/firmware/firmware.elf verify reset exit'"),
    ("nucleo-f446re", "st-flash", "st-flash --reset write /runs/x/firmware/firmware.bin 0x08000000"),
    ("stm32f746g-disco", "st-flash", "st-flash --reset write /runs/x/firmware/firmware.bin 0x08000000"),
    ("nrf52840-dk", "nrfjprog",
     "nrfjprog --program /runs/x/firmware/firmware.hex --chiperase --verify --reset"),
    ("rpi-pico", "picotool", "picotool load -x /runs/x/firmware/firmware.uf2"),
    ("arduino-uno", "arduino-cli",
     "arduino-cli upload -p /dev/ttyACM0 --fqbn arduino:avr:uno --input-file "
     "/runs/x/firmware/firmware.hex"),
])
def test_each_alternative_tool_has_its_own_command(name, tool, command):
    assert plan_flash(load_board(name), ELF, tool=tool, which=nothing_installed).command_line == command


def test_every_real_board_can_be_flashed_and_emulated_ones_cannot():
    for board in list_boards():
        if board.emulator is None:
            assert flashers(board), board.name
        else:
            assert not flashers(board), board.name
            with pytest.raises(FlashError, match="emulate"):
                plan_flash(board, ELF)


def test_first_installed_tool_wins():
    def only_openocd(name: str) -> str | None:
        return "/usr/bin/openocd" if name == "openocd" else None

    plan = plan_flash(load_board("nucleo-f446re"), ELF, which=only_openocd)
    assert plan.tool == "openocd" and plan.installed


def test_missing_port_uses_the_board_default_and_says_so():
    plan = plan_flash(load_board("arduino-uno"), ELF, which=nothing_installed)
    assert "-P /dev/ttyACM0" in plan.command_line
    assert any("no --port" in note for note in plan.notes)


def test_unknown_tool_lists_the_board_tools():
    with pytest.raises(FlashError, match="pyocd, openocd, st-flash"):
        plan_flash(load_board("nucleo-f446re"), ELF, tool="avrdude")


def test_running_a_missing_tool_names_it_and_its_install_line(tmp_path):
    plan = plan_flash(load_board("arduino-uno"), tmp_path / "firmware.elf", which=nothing_installed)
    with pytest.raises(ToolchainMissingError, match="avrdude.*apt-get install -y avrdude"):
        run_flash(plan, tmp_path / "firmware.elf")


def test_uf2_copy_lands_on_the_drive(tmp_path):
    elf = tmp_path / "fw" / "firmware.elf"
    elf.parent.mkdir()
    elf.write_bytes(b"\x7fELF")
    elf.with_suffix(".uf2").write_bytes(b"UF2\n" * 128)
    drive = tmp_path / "RPI-RP2"
    drive.mkdir()
    plan = plan_flash(load_board("rpi-pico"), elf, port=str(drive))
    run_flash(plan, elf)
    assert (drive / "firmware.uf2").read_bytes() == b"UF2\n" * 128


def test_uf2_copy_without_a_mounted_drive_explains_bootsel(tmp_path):
    elf = tmp_path / "firmware.elf"
    elf.write_bytes(b"\x7fELF")
    elf.with_suffix(".uf2").write_bytes(b"x")
    plan = plan_flash(load_board("rpi-pico"), elf, port=str(tmp_path / "not-mounted"))
    with pytest.raises(Exception, match="BOOTSEL"):
        run_flash(plan, elf)


def _run_folder(tmp_path: Path, board: str) -> Path:
    run = tmp_path / "run"
    (run / "firmware").mkdir(parents=True)
    elf = run / "firmware" / "firmware.elf"
    (run / "build.json").write_text(json.dumps({"board": board, "elf": str(elf)}))
    return run


def test_cli_dry_run_prints_the_command_and_runs_nothing(tmp_path, capsys):
    run = _run_folder(tmp_path, "arduino-uno")
    assert main(["flash", str(run), "--dry-run", "--port", "/dev/ttyACM3"]) == 0
    out = capsys.readouterr().out
    assert "$ avrdude -p atmega328p -c arduino -P /dev/ttyACM3 -b 115200" in out.replace("\n", " ")


def test_cli_refuses_firmware_built_for_another_board(tmp_path, capsys):
    run = _run_folder(tmp_path, "arduino-uno")
    assert main(["flash", str(run), "--target", "nucleo-f446re", "--dry-run"]) == 2
    assert "built for arduino-uno" in capsys.readouterr().out.replace("\n", " ")
