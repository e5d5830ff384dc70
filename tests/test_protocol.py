"""The serial protocol: Python framing, and the device C code built for the host.

The C side (firmware_templates/common) runs here under ASan and UBSan with
stdin/stdout as its UART (tests/fixtures/host_proto), so every rule is checked
against both implementations without an emulator.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import struct
import threading
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from microfit.errors import DeviceTimeoutError, PortError, ProtocolError
from microfit.harness import protocol as P
from microfit.harness.client import DeviceClient

FIXTURES = Path(__file__).parent / "fixtures"


def load_twin():
    spec = importlib.util.spec_from_file_location("echo_twin", FIXTURES / "echo_model" / "twin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


twin = load_twin()

# ------------------------------------------------------------------ CRC, COBS


@pytest.mark.parametrize(
    "data, crc",
    [(b"123456789", 0x29B1), (b"", 0xFFFF), (b"\x00", 0xE1F0), (b"A", 0xB915)],
)
def test_crc16_ccitt_false_matches_known_check_values(data, crc):
    assert P.crc16_ccitt_false(data) == crc


def test_crc16_can_be_computed_incrementally():
    assert P.crc16_ccitt_false(b"56789", P.crc16_ccitt_false(b"1234")) == 0x29B1


@pytest.mark.parametrize(
    "raw, encoded",
    [
        (b"", b"\x01"),
        (b"\x00", b"\x01\x01"),
        (b"\x00\x00", b"\x01\x01\x01"),
        (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
        (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
        (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    ],
)
def test_cobs_encodes_published_examples(raw, encoded):
    assert P.cobs_encode(raw) == encoded
    assert P.cobs_decode(encoded) == raw


def test_cobs_round_trips_random_data_with_zeros_and_long_runs():
    rng = np.random.default_rng(7)
    cases = [bytes(range(1, 255)), bytes(range(1, 255)) + b"\x00", bytes([1]) * 600]
    for n in list(range(0, 20)) + [253, 254, 255, 256, 508, 509, 700]:
        for zero_share in (0.0, 0.1, 0.5, 1.0):
            data = rng.integers(1, 256, n, dtype=np.uint8)
            data[rng.random(n) < zero_share] = 0
            cases.append(data.tobytes())
    for data in cases:
        encoded = P.cobs_encode(data)
        assert 0 not in encoded
        assert len(encoded) <= len(data) + len(data) // 254 + 2
        assert P.cobs_decode(encoded) == data


def test_cobs_decoder_rejects_zero_bytes_and_truncated_blocks():
    with pytest.raises(P.FrameError, match="zero byte"):
        P.cobs_decode(b"\x03\x11\x00")
    with pytest.raises(P.FrameError, match="needs"):
        P.cobs_decode(b"\x05\x11\x22")
    with pytest.raises(P.FrameError):
        P.cobs_decode(b"")


# ------------------------------------------------------------------ frames


def test_frame_round_trip_keeps_type_seq_and_payload():
    frame = P.Frame(P.Msg.LOAD_INPUT, 200, bytes(range(256))[:66])
    wire = P.encode_frame(frame)
    assert wire.endswith(b"\x00") and wire.count(0) == 1
    assert P.decode_frame(wire) == frame
    assert P.decode_frame(wire[:-1]) == frame


def test_every_single_bit_error_on_the_wire_is_rejected():
    frame = P.Frame(P.Msg.OUTPUT, 17, bytes([0, 0, 3, 0]) + bytes(range(40)))
    wire = P.encode_frame(frame)[:-1]
    for pos in range(len(wire)):
        for bit in range(8):
            bad = bytearray(wire)
            bad[pos] ^= 1 << bit
            with pytest.raises(P.FrameError):
                P.decode_frame(bytes(bad))


def test_frame_shorter_than_header_and_crc_is_rejected():
    with pytest.raises(P.FrameError, match="shorter"):
        P.decode_frame(P.cobs_encode(b"\x01\x02\x03"))


def test_info_payload_round_trips_and_ignores_fields_of_later_versions():
    info = P.DeviceInfo(
        protocol_version=1, counter_kind="instructions", max_chunk=64, flags=0,
        model_hash=twin.MODEL_HASH, input_size=64, output_size=10,
        input_scale_bits=twin.INPUT_SCALE_BITS, input_zero_point=-128,
        output_scale_bits=twin.OUTPUT_SCALE_BITS, output_zero_point=12, clock_hz=25_000_000,
        counter_per_tick=40, arena_size=74, macs=640, board_name="qemu-mps2-an386",
    )
    payload = P.pack_info(info)
    assert P.parse_info(payload) == info
    assert P.parse_info(payload + b"future fields") == info
    assert info.input_scale == pytest.approx(1 / 255)
    assert info.output_scale == 0.125
    with pytest.raises(ProtocolError):
        P.parse_info(payload[:20])


# ------------------------------------------------------------------ device C on the host

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc missing: apt-get install gcc")


@pytest.fixture(scope="module")
def proto_host(tmp_path_factory) -> Path:
    """The device protocol + echo model compiled for the host with ASan and UBSan."""
    from microfit.toolchain.host import compile_host

    common = Path(str(resources.files("microfit.firmware_templates") / "common"))
    out = tmp_path_factory.mktemp("proto_host") / "proto_host"
    return compile_host(
        [
            FIXTURES / "host_proto" / "host_hal.c",
            common / "mf_frame.c",
            common / "mf_protocol.c",
            FIXTURES / "echo_model" / "model.c",
            FIXTURES / "echo_model" / "model_weights.c",
        ],
        out,
        include_dirs=[FIXTURES / "host_proto", common, FIXTURES / "echo_model"],
    )


def run_device(exe: Path, stream: bytes) -> list[P.Frame]:
    """Feed `stream` to the host-built device; return its replies (all CRC-checked)."""
    import subprocess

    proc = subprocess.run([str(exe)], input=stream, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout.endswith(b"\x00") or proc.stdout == b""
    return [P.decode_frame(w) for w in proc.stdout.split(b"\x00")[:-1]]


def req(msg: int, seq: int, payload: bytes = b"") -> bytes:
    return P.encode_frame(P.Frame(msg, seq, payload))


def error_of(frame: P.Frame) -> P.ErrorCode:
    assert frame.type == P.Msg.ERROR
    return P.ErrorCode(P.parse_error(frame.payload).code)


@needs_gcc
def test_host_device_hello_reports_model_and_board(proto_host):
    (reply,) = run_device(proto_host, b"\x00" + req(P.Msg.HELLO, 42))
    assert (reply.type, reply.seq) == (P.Msg.INFO, 42)
    info = P.parse_info(reply.payload)
    assert info.model_hash == twin.MODEL_HASH
    assert (info.input_size, info.output_size) == (twin.INPUT_SIZE, twin.OUTPUT_SIZE)
    assert (info.input_zero_point, info.output_zero_point) == (-128, 12)
    assert (info.input_scale_bits, info.output_scale_bits) == (twin.INPUT_SCALE_BITS, twin.OUTPUT_SCALE_BITS)
    assert (info.board_name, info.counter_kind, info.counter_per_tick) == ("host-test", "cycles", 3)
    assert (info.arena_size, info.macs, info.max_chunk) == (twin.ARENA_SIZE, twin.MACS, 64)


@needs_gcc
def test_host_device_inference_matches_python_twin(proto_host):
    rng = np.random.default_rng(3)
    inputs = rng.integers(-128, 128, (5, 64), dtype=np.int8)
    stream = bytearray(b"\x00")
    seq = 0
    for x in inputs:
        data = x.tobytes()
        for offset in range(0, 64, 40):  # uneven chunks on purpose
            seq += 1
            stream += req(P.Msg.LOAD_INPUT, seq, P.load_input_payload(offset, data[offset:offset + 40]))
        stream += req(P.Msg.INVOKE, 100 + seq)
        stream += req(P.Msg.READ_OUTPUT, 200 + seq, P.read_output_payload(0, 6))
        stream += req(P.Msg.READ_OUTPUT, 201 + seq, P.read_output_payload(6, 4))
    replies = run_device(proto_host, bytes(stream))
    assert len(replies) == 5 * 5
    for k, x in enumerate(inputs):
        ack1, ack2, done, out1, out2 = replies[5 * k : 5 * k + 5]
        assert ack1.type == ack2.type == P.Msg.ACK
        assert struct.unpack("<HB", ack2.payload) == (40, 24)
        d = P.parse_done(done.payload)
        assert d.input_crc == P.crc16_ccitt_false(x.tobytes())
        assert d.run == k + 1
        assert d.counter == d.ticks * 3 and d.ticks > 0
        o1, o2 = P.parse_output(out1.payload), P.parse_output(out2.payload)
        assert (o1[0], o1[1], o2[0], o2[1]) == (0, k + 1, 6, k + 1)
        assert o1[2] + o2[2] == twin.echo_reference(x).tobytes()


@needs_gcc
def test_host_device_rejects_bad_requests_with_specific_errors(proto_host):
    good = P.frame_body(P.Frame(P.Msg.HELLO, 9))
    bad_crc = P.cobs_encode(good[:-1] + bytes([good[-1] ^ 0x40])) + b"\x00"
    stream = (
        bad_crc
        + req(0x55, 10)
        + req(P.Msg.INVOKE, 11, b"\x01")
        + req(P.Msg.LOAD_INPUT, 12, P.load_input_payload(60, bytes(8)))
        + req(P.Msg.LOAD_INPUT, 13, P.load_input_payload(0, bytes(65)))
        + req(P.Msg.READ_OUTPUT, 14, P.read_output_payload(8, 4))
        + req(P.Msg.READ_OUTPUT, 15, P.read_output_payload(0, 0))
        + b"\x05\x01\x02\x00"  # COBS block cut short by the delimiter
        + b"\x02\x01\x00"  # decodes to one byte: no room for a header
        + req(P.Msg.HELLO, 16)
    )
    replies = run_device(proto_host, stream)
    codes = [error_of(r) for r in replies[:-1]]
    assert codes == [
        P.ErrorCode.BAD_CRC,
        P.ErrorCode.UNKNOWN_COMMAND,
        P.ErrorCode.BAD_LENGTH,
        P.ErrorCode.OUT_OF_RANGE,
        P.ErrorCode.BAD_LENGTH,
        P.ErrorCode.OUT_OF_RANGE,
        P.ErrorCode.BAD_LENGTH,
        P.ErrorCode.BAD_FRAMING,
        P.ErrorCode.BAD_FRAMING,
    ]
    assert [r.seq for r in replies[:7]] == [9, 10, 11, 12, 13, 14, 15]
    assert P.parse_error(replies[3].payload).detail == 64  # the input size
    assert (replies[-1].type, replies[-1].seq) == (P.Msg.INFO, 16)


@needs_gcc
def test_host_device_survives_overlong_frames_and_random_garbage(proto_host):
    rng = np.random.default_rng(11)
    overlong = P.encode_frame(P.Frame(P.Msg.LOAD_INPUT, 3, bytes(range(1, 201))))
    garbage = rng.integers(0, 256, 30_000, dtype=np.uint8).tobytes()
    stream = overlong + garbage + b"\x00" + req(P.Msg.HELLO, 77)
    replies = run_device(proto_host, stream)
    assert error_of(replies[0]) == P.ErrorCode.FRAME_TOO_LONG
    assert replies[0].seq == 3
    # Garbage gets error replies (all with valid CRCs: run_device decoded
    # them), and the link is in step again for the real request.
    assert (replies[-1].type, replies[-1].seq) == (P.Msg.INFO, 77)


# ------------------------------------------------------------------ client, no device


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_port_raises_port_error_naming_it():
    url = f"socket://127.0.0.1:{closed_port()}"
    with pytest.raises(PortError) as info:
        DeviceClient(url, connect_timeout=0.3)
    message = str(info.value)
    assert url in message and "emulator" in message


def test_missing_serial_device_raises_port_error_with_advice():
    with pytest.raises(PortError, match="list_ports"):
        DeviceClient("/dev/ttyMICROFIT-NOPE", connect_timeout=0.1)


def test_silent_device_raises_timeout_after_counted_retries():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    held: list[socket.socket] = []
    thread = threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True)
    thread.start()
    try:
        client = DeviceClient(f"socket://127.0.0.1:{server.getsockname()[1]}", timeout=0.15, retries=2)
        with pytest.raises(DeviceTimeoutError, match="HELLO after 3 attempts"):
            client.hello()
        assert client.stats.retries == 2 and client.stats.timeouts == 3
        client.close()
    finally:
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.skipif(shutil.which("avr-gcc") is None, reason="avr-gcc missing: apt-get install gcc-avr avr-libc")
def test_device_protocol_builds_for_a_2kb_avr_with_little_ram(tmp_path):
    """The same C must compile warning-free for ATmega328P (16-bit int) and stay small in RAM."""
    import subprocess

    common = Path(str(resources.files("microfit.firmware_templates") / "common"))
    objects = []
    for name in ("mf_frame.c", "mf_protocol.c"):
        obj = tmp_path / (name + ".o")
        subprocess.run(
            ["avr-gcc", "-mmcu=atmega328p", "-Os", "-std=c99", "-Wall", "-Wextra", "-Werror",
             f"-I{FIXTURES / 'host_proto'}", f"-I{common}", f"-I{FIXTURES / 'echo_model'}",
             "-c", str(common / name), "-o", str(obj)],
            check=True, capture_output=True, text=True,
        )
        objects.append(str(obj))
    sizes = subprocess.run(["avr-size", *objects], check=True, capture_output=True, text=True).stdout
    bss = sum(int(line.split()[2]) for line in sizes.splitlines()[1:])
    assert bss <= 128, sizes


# ------------------------------------------------------------------ fuzzing

FUZZ = Path(__file__).parent.parent / "fuzz"


def _libfuzzer_works(tmp_path: Path) -> bool:
    if shutil.which("clang") is None:
        return False
    import subprocess

    probe = tmp_path / "probe.c"
    probe.write_text("#include <stdint.h>\n#include <stddef.h>\n"
                     "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)"
                     "{(void)d;(void)n;return 0;}\n")
    proc = subprocess.run(["clang", "-fsanitize=fuzzer", str(probe), "-o", str(tmp_path / "probe")],
                          capture_output=True)
    return proc.returncode == 0


def _run_fuzz(tmp_path: Path, runs: int, common: Path | None = None):
    import subprocess
    import sys

    args = ["make", "-C", str(FUZZ), "run", f"RUNS={runs}", f"BUILD={tmp_path / 'build'}",
            f"PYTHON={sys.executable}"]
    if common is not None:
        args.append(f"COMMON={common}")
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


def test_fuzzer_short_run_of_the_device_parser_is_clean(tmp_path):
    """A few seconds of `make fuzz` (10^6 inputs there) under ASan + UBSan."""
    if not _libfuzzer_works(tmp_path):
        pytest.skip("clang with libFuzzer missing: apt-get install clang libclang-rt-14-dev")
    proc = _run_fuzz(tmp_path, 20_000)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Done 20000 runs" in proc.stderr


def test_fuzzer_finds_a_planted_buffer_overflow(tmp_path):
    """The harness can fail: a decoder that forgets its bound is caught at once."""
    if not _libfuzzer_works(tmp_path):
        pytest.skip("clang with libFuzzer missing: apt-get install clang libclang-rt-14-dev")
    common = Path(str(resources.files("microfit.firmware_templates") / "common"))
    broken = tmp_path / "common"
    shutil.copytree(common, broken)
    source = (broken / "mf_frame.c").read_text()
    assert "if (rx->len < rx->cap) {" in source
    (broken / "mf_frame.c").write_text(source.replace("if (rx->len < rx->cap) {", "if (1) {"))
    proc = _run_fuzz(tmp_path, 200_000, common=broken)
    assert proc.returncode != 0
    assert "AddressSanitizer" in proc.stderr
