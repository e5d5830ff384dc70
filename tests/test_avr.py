"""AVR boards: the Uno firmware built with avr-gcc, run cycle-exactly in simavr over the protocol."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from microfit.emulate import SimavrSession, emulator_session
from microfit.emulate import simavr as simavr_mod
from microfit.errors import DeviceError, FitError, ToolchainMissingError
from microfit.harness.client import DeviceClient
from microfit.harness.validate import validate
from microfit.target.boards import load_board
from microfit.target.project import render_project
from microfit.toolchain.firmware import build_firmware

FIXTURES = Path(__file__).parent / "fixtures"
ECHO = FIXTURES / "echo_model"

HAVE_AVR_GCC = shutil.which("avr-gcc") is not None
HAVE_SIMAVR = simavr_mod.SIMAVR_HEADER.is_file() and shutil.which("gcc") is not None

needs_avr_gcc = pytest.mark.skipif(
    not HAVE_AVR_GCC, reason="avr-gcc missing: apt-get install gcc-avr avr-libc binutils-avr"
)
needs_simavr = pytest.mark.skipif(
    not (HAVE_AVR_GCC and HAVE_SIMAVR),
    reason="avr-gcc or libsimavr missing: apt-get install gcc-avr avr-libc binutils-avr "
    "simavr libsimavr-dev gcc",
)


def load_twin():
    spec = importlib.util.spec_from_file_location("echo_twin_avr", ECHO / "twin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


twin = load_twin()


def patched_echo(tmp_path: Path, name: str, model_c_extra: str = "", arena: int | None = None) -> Path:
    """A copy of the echo fixture, optionally with extra C or a bigger arena."""
    model = tmp_path / name
    shutil.copytree(ECHO, model)
    if model_c_extra:
        text = (model / "model.c").read_text()
        (model / "model.c").write_text(text + model_c_extra)
    if arena is not None:
        header = (model / "model.h").read_text()
        old = "#define MODEL_ARENA_SIZE   (MODEL_INPUT_SIZE + MODEL_OUTPUT_SIZE)"
        assert old in header
        (model / "model.h").write_text(header.replace(old, f"#define MODEL_ARENA_SIZE   {arena}"))
    return model


# ------------------------------------------------------------------ board files


@pytest.mark.parametrize("name, flash", [("simavr-uno", 32768), ("arduino-uno", 32256)])
def test_uno_boards_state_the_atmega328p_numbers(name, flash):
    board = load_board(name)
    assert (board.family, board.raw["mcu"], board.clock_hz) == ("avr", "atmega328p", 16_000_000)
    assert board.flash.size == flash  # the real Uno loses 512 B to its bootloader
    assert (board.ram.origin, board.ram.size) == (0x800100, 2048)
    assert (board.counter.kind, board.counter.per_tick) == ("cycles", 1)
    assert "-mmcu=atmega328p" in board.cpu_flags


def test_only_the_simulated_uno_has_an_emulator():
    assert load_board("simavr-uno").emulator.kind == "simavr"
    assert load_board("arduino-uno").emulator is None
    with pytest.raises(DeviceError, match="no emulator.*--port"):
        emulator_session(load_board("arduino-uno"), "firmware.elf")


# ------------------------------------------------------------------ build and fit


@pytest.fixture(scope="module")
def uno_echo(tmp_path_factory):
    if not HAVE_AVR_GCC:
        pytest.skip("avr-gcc missing: apt-get install gcc-avr avr-libc binutils-avr")
    board = load_board("simavr-uno")
    out = tmp_path_factory.mktemp("uno_echo")
    return board, build_firmware(render_project(board, ECHO, out), board)


def test_avr_build_counts_data_in_flash_and_reserves_the_stack(uno_echo):
    board, build = uno_echo
    s = build.sections
    assert build.flash_bytes == s[".text"] + s.get(".data", 0)
    assert build.stack_bytes == board.stack_size
    assert build.ram_bytes == s.get(".data", 0) + s.get(".bss", 0) + board.stack_size
    assert build.arena_bytes == twin.ARENA_SIZE
    assert (build.elf.parent / "firmware.hex").read_text().startswith(":")


@needs_avr_gcc
def test_model_too_big_for_uno_ram_names_numbers_and_the_fix(tmp_path):
    board = load_board("simavr-uno")
    model = patched_echo(tmp_path, "big", arena=2100)
    with pytest.raises(FitError) as info:
        build_firmware(render_project(board, model, tmp_path / "fw"), board)
    message = str(info.value)
    assert "RAM, board simavr-uno has 2 KB" in message and "over" in message
    assert f"{board.stack_size} bytes are the stack reserve" in message
    assert "arena alone takes 2,100 bytes" in message and "--mac-ratio" in message


# ------------------------------------------------------------------ simavr


@pytest.fixture(scope="module")
def uno_session(uno_echo):
    if not HAVE_SIMAVR:
        pytest.skip("libsimavr missing: apt-get install simavr libsimavr-dev gcc")
    board, build = uno_echo
    session = SimavrSession(board, build.elf)
    url = session.start()
    client = DeviceClient(url, timeout=5.0)
    yield session, client
    client.close()
    session.close()


@needs_simavr
def test_uno_in_simavr_reports_its_board_and_counts_cycles(uno_session):
    _, client = uno_session
    info = client.hello(expected_hash=twin.MODEL_HASH)
    assert info.board_name == "simavr-uno"
    assert (info.clock_hz, info.counter_kind, info.counter_per_tick) == (16_000_000, "cycles", 1)
    assert (info.arena_size, info.macs) == (twin.ARENA_SIZE, twin.MACS)


@needs_simavr
def test_uno_in_simavr_equals_the_twin_on_random_inputs_with_exact_cycles(uno_session):
    _, client = uno_session
    rng = np.random.default_rng(7)
    inputs = rng.integers(-128, 128, (12, 64), dtype=np.int8)
    expected = np.stack([twin.echo_reference(x) for x in inputs])
    result = validate(client, inputs, expected=expected, progress=False)
    assert result.agreement == 1.0 and result.retries == 0
    assert result.counter.kind == "cycles"
    # 640 MACs with 32-bit accumulators on an 8-bit core: thousands of cycles,
    # and identical for the same input (simavr is cycle-exact).
    x = inputs[0].tobytes()
    counts = {client.infer(x).counter_value for _ in range(3)}
    assert len(counts) == 1 and 640 * 20 < counts.pop() < 640 * 2000


@needs_simavr
def test_bridge_reports_the_peak_stack_on_close(uno_echo):
    board, build = uno_echo
    session = SimavrSession(board, build.elf)
    with session as url, DeviceClient(url, timeout=5.0) as client:
        client.infer(bytes(64))
    assert session.stack_peak is not None and 0 < session.stack_peak < board.stack_size


@needs_simavr
def test_stack_running_into_bss_stops_the_simulation_with_a_message(tmp_path):
    # A model whose invoke puts 1.9 KB on the stack: it overwrites .bss on a
    # real Uno; the bridge catches the stack pointer crossing the end of .bss.
    deep = (
        "\nvoid deep_stack(volatile uint8_t *p);\n"
        "void deep_stack(volatile uint8_t *p) { p[0] = 1; }\n"
        "void model_invoke_deep(void);\n"
        "void model_invoke_deep(void) { volatile uint8_t big[1900]; deep_stack(big); }\n"
    )
    model = patched_echo(tmp_path, "deep", model_c_extra=deep)
    text = (model / "model.c").read_text().replace(
        "    MODEL_LAYER_BEGIN(0);", "    model_invoke_deep();\n    MODEL_LAYER_BEGIN(0);", 1
    )
    text = text.replace('#include "model.h"', '#include "model.h"\nvoid model_invoke_deep(void);', 1)
    (model / "model.c").write_text(text)
    board = load_board("simavr-uno")
    build = build_firmware(render_project(board, model, tmp_path / "fw"), board)
    session = SimavrSession(board, build.elf)
    with session as url, DeviceClient(url, timeout=1.0, retries=0, invoke_timeout=2.0) as client:
        with pytest.raises(DeviceError):
            client.infer(bytes(64))
        session.process.wait(timeout=5)
        with pytest.raises(DeviceError, match="stack overflow: SP 0x[0-9a-f]+ is below"):
            session.check_alive()


def test_missing_libsimavr_names_the_packages(tmp_path, monkeypatch):
    monkeypatch.setattr(simavr_mod, "SIMAVR_HEADER", tmp_path / "nope" / "sim_avr.h")
    with pytest.raises(ToolchainMissingError, match="libsimavr-dev"):
        simavr_mod.build_bridge(load_board("simavr-uno"), cache=tmp_path / "cache")


# ------------------------------------------------------------------ end to end


@pytest.mark.slow
@needs_simavr
def test_digits_cnn_pruned_to_fit_runs_on_the_uno_with_full_agreement(tmp_path):
    from microfit.cli import main

    out = tmp_path / "uno"
    code = main(["-q", "run", "--out", str(out), "--target", "simavr-uno", "--mac-ratio", "0.25",
                 "--epochs", "2", "--finetune-epochs", "1", "--limit", "8"])
    assert code == 0
    build = json.loads((out / "build.json").read_text())
    assert build["board"] == "simavr-uno"
    assert build["ram_bytes"] <= 2048 and build["flash_bytes"] <= 32768
    result = json.loads((out / "validate.json").read_text())
    assert result["samples"] == 8 and result["agreement"] == 1.0
    assert result["counter_kind"] == "cycles" and result["port"] == "simavr"
    assert 0 < result["stack_peak_bytes"] <= build["stack_bytes"]
    assert result["counter_stats"]["median"] > result["macs"]  # >= 1 cycle per MAC


@needs_simavr
def test_generated_model_hash_stays_in_flash_and_the_uno_reports_it(tmp_path):
    """model_hash is PROGMEM like the weights (no RAM on the Uno) and INFO still carries it:
    the firmware reads it with memcpy_P, and the output bytes equal the reference."""
    import subprocess

    from tflite_cases import conv_graph

    from microfit.codegen.generate import generate
    from microfit.reference.executor import run_int8

    q = conv_graph(np.random.default_rng(3), h=6, w=6, cin=2, cout=4, act="RELU")
    gen = generate(q, tmp_path / "gen", board_name="simavr-uno")
    assert "model_hash[8] MF_CONST = {" in (gen.out_dir / "model.c").read_text()
    board = load_board("simavr-uno")
    build = build_firmware(render_project(board, gen.out_dir, tmp_path / "fw"), board)
    nm = subprocess.run(["avr-nm", str(build.elf)], capture_output=True, text=True, check=True)
    addr = int(next(ln.split()[0] for ln in nm.stdout.splitlines() if ln.endswith(" model_hash")), 16)
    assert addr < 0x800000, f"model_hash at 0x{addr:x}: in RAM (0x800000+), not in flash"
    # The linker map attributes AVR's PROGMEM constants (.progmem.data.*) to their objects.
    from microfit.codegen.codesize import code_size_from_map

    size = code_size_from_map(build.elf.parent / "firmware.map")
    assert size.weights >= gen.weight_bytes > 0
    assert size.model_code >= 8 and size.runtime_code > 0
    xq = np.random.default_rng(4).integers(-128, 128, (3, *q.tensors[q.inputs[0]].shape[1:]),
                                           dtype=np.int8)
    session = SimavrSession(board, build.elf)
    client = DeviceClient(session.start(), timeout=5.0)
    try:
        info = client.hello(expected_hash=gen.model_hash)
        assert info.model_hash == gen.model_hash
        result = validate(client, xq.reshape(3, -1), expected=run_int8(q, xq).reshape(3, -1),
                          progress=False)
        assert result.agreement == 1.0
    finally:
        client.close()
        session.close()
