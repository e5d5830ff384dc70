"""The echo fixture model as real firmware on an emulated Cortex-M, over the serial protocol."""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from microfit.emulate.qemu import QemuSession
from microfit.errors import DeviceError, ModelMismatchError, ProtocolError
from microfit.harness import protocol as P
from microfit.harness.client import DeviceClient
from microfit.harness.validate import validate
from microfit.target.boards import load_board
from microfit.target.project import render_project
from microfit.toolchain.firmware import build_firmware

FIXTURES = Path(__file__).parent / "fixtures"

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(
        shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
        reason="needs qemu-system-arm and arm-none-eabi-gcc: apt-get install qemu-system-arm "
        "gcc-arm-none-eabi libnewlib-arm-none-eabi",
    ),
]


def load_twin():
    spec = importlib.util.spec_from_file_location("echo_twin", FIXTURES / "echo_model" / "twin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


twin = load_twin()


def build_echo(board_name: str, out: Path):
    board = load_board(board_name)
    return board, build_firmware(render_project(board, FIXTURES / "echo_model", out), board)


@pytest.fixture(scope="module")
def an386(tmp_path_factory):
    board, build = build_echo("qemu-mps2-an386", tmp_path_factory.mktemp("an386"))
    return board, build.elf


@pytest.fixture(scope="module")
def client(an386):
    board, elf = an386
    with QemuSession(board, elf) as url, DeviceClient(url, timeout=5.0) as c:
        yield c


class CorruptingPort:
    """Wraps the client's port and flips one bit in chosen reads or writes."""

    def __init__(self, port, corrupt_writes=(), corrupt_reads=()):
        self._port = port
        self.corrupt_writes = set(corrupt_writes)
        self.corrupt_reads = set(corrupt_reads)
        self.writes = 0
        self.reads = 0

    def write(self, data):
        self.writes += 1
        if self.writes in self.corrupt_writes and len(data) > 3:
            data = bytearray(data)
            data[2] ^= 0x10
            data = bytes(data)
        return self._port.write(data)

    def read_until(self, expected, size):
        data = self._port.read_until(expected, size)
        if data.endswith(expected) and len(data) > 3:
            self.reads += 1
            if self.reads in self.corrupt_reads:
                data = bytearray(data)
                data[2] ^= 0x04
                data = bytes(data)
        return data

    def __getattr__(self, name):
        return getattr(self._port, name)


def test_hello_reports_the_fixture_model_and_board(client):
    info = client.hello(expected_hash=twin.MODEL_HASH)
    assert info.protocol_version == 1
    assert info.model_hash == twin.MODEL_HASH
    assert (info.input_size, info.output_size) == (twin.INPUT_SIZE, twin.OUTPUT_SIZE)
    assert (info.input_zero_point, info.output_zero_point) == (-128, 12)
    assert (info.input_scale_bits, info.output_scale_bits) == (twin.INPUT_SCALE_BITS, twin.OUTPUT_SCALE_BITS)
    assert info.board_name == "qemu-mps2-an386"
    assert (info.clock_hz, info.counter_kind, info.counter_per_tick) == (25_000_000, "instructions", 40)
    assert (info.arena_size, info.macs) == (twin.ARENA_SIZE, twin.MACS)


def test_fifty_random_inputs_equal_the_python_twin(client):
    rng = np.random.default_rng(2024)
    inputs = rng.integers(-128, 128, (50, 8, 8), dtype=np.int8)
    expected = np.stack([twin.echo_reference(x) for x in inputs])
    labels = expected.argmax(axis=1)
    result = validate(client, inputs, labels=labels, expected=expected, progress=True)
    assert result.agreement == 1.0 and result.mismatches == []
    assert result.accuracy == 1.0
    np.testing.assert_array_equal(result.outputs, expected)
    assert result.retries == 0
    assert result.counter.kind == "instructions" and result.counter.min > 0
    assert np.all(result.counters == result.ticks * 40)
    assert "agreement with reference: 100.00%" in result.summary()
    assert result.to_dict()["samples"] == 50


def test_instruction_counts_repeat_exactly_for_the_same_input(client):
    x = np.arange(-32, 32, dtype=np.int8).tobytes()
    results = [client.infer(x) for _ in range(5)]
    assert len({r.ticks for r in results}) == 1
    assert results[0].ticks > 0
    assert results[0].counter_value == results[0].ticks * 40
    assert results[0].output == twin.echo_reference(x).tobytes()


def test_corrupted_request_is_answered_with_bad_crc_and_link_recovers(client):
    body = bytearray(P.frame_body(P.Frame(P.Msg.HELLO, 0x33)))
    body[-1] ^= 0xFF
    client._port.write(P.cobs_encode(bytes(body)) + b"\x00")
    reply = P.decode_frame(client._port.read_until(b"\x00", 512))
    assert reply.type == P.Msg.ERROR and reply.seq == 0x33
    assert P.parse_error(reply.payload).code == P.ErrorCode.BAD_CRC
    assert client.hello().model_hash == twin.MODEL_HASH


def test_client_resends_after_a_corrupted_request_and_counts_it(client):
    port = client._port
    client._port = CorruptingPort(port, corrupt_writes={1})
    try:
        before = client.stats.retries
        x = bytes(range(64))
        result = client.infer(x)
        assert result.output == twin.echo_reference(x).tobytes()
        assert client.stats.retries - before == 1 and result.retries == 1
        assert client.stats.device_link_errors >= 1
    finally:
        client._port = port


def test_client_never_uses_a_corrupted_reply(client):
    port = client._port
    client._port = CorruptingPort(port, corrupt_reads={2, 3})
    try:
        before = client.stats.crc_errors
        x = bytes(range(100, 164))
        result = client.infer(x)
        assert result.output == twin.echo_reference(x).tobytes()
        assert client.stats.crc_errors - before == 2 and result.retries == 2
    finally:
        client._port = port


def test_wrong_model_hash_raises_model_mismatch(client):
    with pytest.raises(ModelMismatchError, match=twin.MODEL_HASH.hex()):
        client.hello(expected_hash=bytes(8))


def test_out_of_range_request_raises_protocol_error_without_retry(client):
    before = client.stats.retries
    with pytest.raises(ProtocolError, match="OUT_OF_RANGE"):
        client.request(P.Msg.READ_OUTPUT, P.read_output_payload(8, 4))
    assert client.stats.retries == before


@pytest.mark.parametrize("board_name", ["qemu-mps2-an385", "qemu-mps2-an500"])
def test_other_mps2_cores_run_the_same_firmware(board_name, tmp_path):
    board, build = build_echo(board_name, tmp_path)
    x = bytes((7 * i) & 0xFF for i in range(64))
    with QemuSession(board, build.elf) as url, DeviceClient(url) as c:
        assert c.hello().board_name == board_name
        result = c.infer(x)
    assert result.output == twin.echo_reference(x).tobytes()
    assert result.ticks > 0


def test_qemu_that_exits_early_raises_device_error_with_its_stderr(an386):
    board, elf = an386
    with pytest.raises(DeviceError, match="QEMU exited") as info:
        with QemuSession(board, elf, extra_args=["-no-such-option"]):
            pass
    assert "no-such-option" in str(info.value)


def test_crashing_model_is_reported_at_once_not_after_timeouts(tmp_path):
    board = load_board("qemu-mps2-an386")
    build = build_firmware(render_project(board, FIXTURES / "fault_model", tmp_path), board)
    with QemuSession(board, build.elf) as url, DeviceClient(url, timeout=5.0) as c:
        assert c.hello().input_size == 4
        started = time.monotonic()
        with pytest.raises(DeviceError, match="crashed while handling INVOKE") as info:
            c.infer(bytes(4))
        assert time.monotonic() - started < 2.0
        assert "fault 3" in str(info.value)  # HardFault
        assert c.stats.retries == 0
