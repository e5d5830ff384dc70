"""microfit.icount: the QEMU plugin counts guest instructions exactly."""

from __future__ import annotations

import shutil

import pytest

from microfit.errors import DeviceError

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")),
                       reason="apt-get install qemu-system-arm gcc-arm-none-eabi "
                              "libnewlib-arm-none-eabi"),
]

# Between the two marks: the first mark function's return (1), the loop
# (1 + 2 * 100), the call of the second mark (1). Then an empty region: return
# and call (2).
PROGRAM = r"""
#include "mf_baremetal.h"

__attribute__((noinline)) static void spin(void)
{
    __asm volatile("movs r0, #100\n1:\n\tsubs r0, #1\n\tbne 1b\n" ::: "r0", "cc");
}

int main(void)
{
    mf_icount_mark();
    __asm volatile("movs r0, #100\n1:\n\tsubs r0, #1\n\tbne 1b\n" ::: "r0", "cc");
    mf_icount_mark();
    mf_icount_mark();
    mf_icount_mark();
    spin();
    mf_puts("done\n");
    return EXIT_CODE;
}
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    from microfit.icount import build_baremetal

    def build(exit_code: int = 0, board: str = "qemu-mps2-an386"):
        d = tmp_path_factory.mktemp("icount")
        src = d / "main.c"
        src.write_text(PROGRAM.replace("EXIT_CODE", str(exit_code)))
        return build_baremetal([src], d / "main.elf", board)

    return build


@pytest.mark.parametrize("board", ["qemu-mps2-an386", "qemu-mps2-an385"])
def test_counts_are_exact_between_marks(program, board):
    from microfit.icount import run_counted

    run = run_counted(program(board=board), board)
    assert run.regions() == [203, 2]
    assert run.uart == b"done\n"
    assert run.total > run.marks[-1] > 0


def test_profile_attributes_instructions_to_functions(program):
    from microfit.icount import by_function, run_counted

    elf = program()
    run = run_counted(elf, profile=True)
    funcs = by_function(elf, run.profile)
    assert sum(funcs.values()) == run.total
    assert funcs["spin"] == 1 + 2 * 100 + 1  # the loop and the return
    assert funcs["main"] >= 1 + 2 * 100


def test_failing_program_is_an_error_with_its_output(program):
    from microfit.icount import run_counted

    elf = program(exit_code=3)
    with pytest.raises(DeviceError, match=r"(?s)exited with status 1.*done"):
        run_counted(elf)
    assert run_counted(elf, check=False).returncode == 1
