"""EEMBC / MLPerf Tiny mode: the echo firmware in QEMU driven with the runner's commands."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import requires_qemu

from microfit.harness.eembc import EembcRunner, build_eembc_firmware

FIXTURES = Path(__file__).parent / "fixtures"


def load_twin():
    spec = importlib.util.spec_from_file_location("echo_twin", FIXTURES / "echo_model" / "twin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


twin = load_twin()


def dequantized(q: np.ndarray) -> list[float]:
    return [(int(v) - twin.OUTPUT_ZERO_POINT) * 0.125 for v in q]


@requires_qemu
def test_runner_command_sequence_against_qemu(tmp_path):
    from microfit.emulate.qemu import QemuSession
    from microfit.target.boards import load_board

    board = load_board("qemu-mps2-an386")
    elf = build_eembc_firmware(board, FIXTURES / "echo_model", tmp_path / "fw", model_id="ic01")
    rng = np.random.default_rng(5)
    inputs = rng.integers(-128, 128, (3, 64), dtype=np.int8)
    with QemuSession(board, elf) as url, EembcRunner(url, timeout=10) as runner:
        boot = runner.boot()
        assert boot[0] == "m-timestamp-mode-performance"
        assert boot[1].startswith("m-lap-us-") and boot[-2:] == ["m-init-done", "m-ready"]
        assert runner.name() == "qemu-mps2-an386"
        assert runner.profile() == "ic01"
        t0 = runner.timestamp_us()
        for x in inputs:
            runner.load(x.tobytes())  # 64 bytes: three db commands of <= 31 bytes
            inf = runner.infer(runs=5, warmup=2)
            assert inf.results == dequantized(twin.echo_reference(x))
            assert inf.end_us >= inf.start_us >= t0
            assert runner.results() == inf.results
        # What the runner would print: db print shows the last input.
        dump = runner.command("db print")
        assert dump == ["m-buffer-" + inputs[-1].tobytes().hex()]
        # Errors are named, and still end with m-ready (command() waited for it).
        assert runner.command("frobnicate now") == ["e-[Unknown command: frobnicate]"]
        assert runner.command("db load 65")[0].startswith("e-[db load")
        assert runner.command("db load 2") == ["m-[Expecting 2 bytes]"]
        assert runner.command("db zz00")[0].startswith("e-[db: not hex")
        assert runner.command("infer x")[0].startswith("e-[infer")
        runner._port.write(b"q" * 90 + b"%")
        assert runner.wait_ready() == ["e-[Command longer than 80 characters]", "m-ready"]


def test_runner_refuses_overlong_commands_before_sending():
    runner = EembcRunner("loop://")
    with pytest.raises(ValueError):
        runner.command("x" * 81)
    runner.close()
