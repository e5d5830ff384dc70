"""The Arduino library export: its layout, a build with Debian's Arduino AVR core, a run in simavr."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from microfit.emulate import SimavrSession
from microfit.emulate import simavr as simavr_mod
from microfit.errors import ToolchainMissingError
from microfit.harness.client import DeviceClient
from microfit.target import arduino
from microfit.target.boards import load_board

ECHO = Path(__file__).parent / "fixtures" / "echo_model"

spec = importlib.util.spec_from_file_location("echo_twin_arduino", ECHO / "twin.py")
twin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(twin)

HAVE_CORE = shutil.which("avr-gcc") is not None and (arduino.ARDUINO_AVR_CORE / "cores").is_dir()
needs_core = pytest.mark.skipif(
    not HAVE_CORE,
    reason="avr-gcc or the Arduino AVR core missing: apt-get install gcc-avr avr-libc arduino-core-avr",
)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    out = tmp_path_factory.mktemp("arduino")
    sample = list(range(-32, 32))
    return arduino.export_arduino_library(load_board("arduino-uno"), ECHO, out, sample=sample,
                                          sample_label=3)


def test_library_has_the_layout_the_arduino_tools_expect(library):
    for rel in ("library.properties", "src/microfit_model.h", "src/model.c", "src/model.h",
                "src/mf_protocol.c", "src/mf_hal_arduino.cpp", "src/mf_board.h",
                "src/mf_platform.h", "examples/validate/validate.ino",
                "examples/classify/classify.ino", "platformio.ini"):
        assert (library / rel).is_file(), rel
    assert not list(library.rglob("*.j2"))
    props = dict(line.split("=", 1) for line in (library / "library.properties").read_text().splitlines())
    assert props["name"] == "microfit_model" and props["architectures"] == "*"
    assert props["includes"] == "microfit_model.h"
    assert twin.MODEL_HASH.hex() in props["paragraph"]


def test_examples_and_platformio_name_the_board_and_the_sample(library):
    classify = (library / "examples" / "classify" / "classify.ino").read_text()
    assert "#include <microfit_model.h>" in classify
    assert "-32, -31, -30" in classify and "its label: 3" in classify
    pio = (library / "platformio.ini").read_text()
    assert "[env:arduino_uno]" in pio and "board = uno" in pio and "platform = atmelavr" in pio
    assert "src_dir = examples/validate" in pio
    board_h = (library / "src" / "mf_board.h").read_text()
    assert '"arduino-uno"' in board_h and "MF_COUNTER_KIND        2" in board_h


def test_wrong_sample_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="model takes 64"):
        arduino.export_arduino_library(load_board("arduino-uno"), ECHO, tmp_path, sample=[0] * 3)


def test_missing_arduino_core_names_the_package(tmp_path, monkeypatch, library):
    monkeypatch.setattr(arduino, "ARDUINO_AVR_CORE", tmp_path / "no-core")
    if shutil.which("avr-gcc") is None:
        pytest.skip("avr-gcc missing: apt-get install gcc-avr")
    with pytest.raises(ToolchainMissingError, match="arduino-core-avr"):
        arduino.build_sketch_avr(library, "validate", load_board("arduino-uno"), tmp_path / "b")


@pytest.mark.slow
@needs_core
def test_validate_sketch_built_with_the_arduino_core_answers_in_simavr(tmp_path):
    board = load_board("simavr-uno")
    lib = arduino.export_arduino_library(board, ECHO, tmp_path / "lib")
    build = arduino.build_sketch_avr(lib, "validate", board, tmp_path / "build")
    assert build.hex.read_text().startswith(":")
    if not (simavr_mod.SIMAVR_HEADER.is_file() and shutil.which("gcc")):
        pytest.skip("libsimavr missing: apt-get install simavr libsimavr-dev gcc")
    x = bytes((5 * i) & 0xFF for i in range(64))
    with SimavrSession(board, build.elf) as url, DeviceClient(url, timeout=5.0) as client:
        info = client.hello(expected_hash=twin.MODEL_HASH)
        result = client.infer(x)
    # Serial and micros() of the Arduino core: time in microseconds, sent as ns.
    assert (info.counter_kind, info.counter_per_tick) == ("nanoseconds", 1000)
    assert result.output == twin.echo_reference(x).tobytes()
    assert result.counter_value > 0
