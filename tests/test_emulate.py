"""Emulator sessions: what the user sees when the emulator cannot run the firmware."""

from __future__ import annotations

import shutil

import pytest
from conftest import requires_qemu

from microfit.emulate import QemuSession, emulator_session
from microfit.emulate import simavr as simavr_mod
from microfit.errors import DeviceError
from microfit.target.boards import load_board


def test_missing_firmware_says_build_it_first(tmp_path):
    for board in ("qemu-mps2-an386", "simavr-uno"):
        with pytest.raises(DeviceError, match="does not exist: build it first"):
            emulator_session(load_board(board), tmp_path / "nope.elf").start()


@requires_qemu
def test_qemu_that_exits_at_start_is_reported_with_its_own_words(tmp_path):
    elf = tmp_path / "firmware.elf"
    elf.write_bytes(b"\x7fELF")
    session = QemuSession(load_board("qemu-mps2-an386"), elf, timeout=20,
                          extra_args=["-no-such-option"])
    with pytest.raises(DeviceError, match=r"QEMU exited with code \d+ before its serial port") as err:
        session.start()
    assert "no-such-option" in str(err.value)
    assert not session.alive()


@pytest.mark.skipif(not (simavr_mod.SIMAVR_HEADER.is_file() and shutil.which("gcc")),
                    reason="libsimavr-dev or gcc missing: apt-get install simavr libsimavr-dev gcc")
def test_a_file_that_is_not_firmware_is_named_with_the_fix(tmp_path):
    elf = tmp_path / "garbage.elf"
    elf.write_bytes(b"\x7fELF this is not a firmware image")
    session = emulator_session(load_board("simavr-uno"), elf, timeout=20)
    with pytest.raises(DeviceError, match=r"not an ELF firmware image .*microfit build"):
        session.start()
    assert not session.alive()


def test_firmware_for_another_core_is_refused_before_simavr_runs_it(tmp_path):
    import subprocess

    if not shutil.which("gcc"):
        pytest.skip("gcc missing")
    elf = tmp_path / "host.elf"
    src = tmp_path / "x.c"
    src.write_text("int main(void) { return 0; }\n")
    subprocess.run(["gcc", str(src), "-o", str(elf)], check=True)
    session = emulator_session(load_board("simavr-uno"), elf, timeout=20)
    with pytest.raises(DeviceError, match=r"was built for EM_\w+, not for AVR"):
        session.start()
    assert not session.alive()
