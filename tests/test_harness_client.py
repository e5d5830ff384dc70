"""The client's checks against the echo model built as a host device on a pty.

No emulator needed: the device protocol's C code runs as a host process
(firmware_templates/host/serial) under ASan and UBSan, and the client talks
to it through a real pseudo-terminal. Each test pins one rule that keeps a
wrong result from being counted, or one recovery.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from microfit.errors import ModelMismatchError, PortError
from microfit.harness import protocol as P
from microfit.harness.client import MIN_CHUNK, DeviceClient

FIXTURES = Path(__file__).parent / "fixtures"

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc missing")


def load_twin():
    spec = importlib.util.spec_from_file_location("echo_twin", FIXTURES / "echo_model" / "twin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


twin = load_twin()


@pytest.fixture(scope="module")
def echo_exe(tmp_path_factory) -> Path:
    from microfit.harness.hostdev import build_host_device

    return build_host_device(FIXTURES / "echo_model", tmp_path_factory.mktemp("dev") / "echo",
                             sanitize=True)


@pytest.fixture
def client(echo_exe):
    from microfit.harness.hostdev import HostDevice

    with HostDevice(echo_exe) as port, DeviceClient(port, timeout=2.0) as c:
        c.hello(expected_hash=twin.MODEL_HASH)
        yield c


class ForgingPort:
    """Rewrites chosen reply frames, with a fresh valid CRC: an error a frame CRC cannot see."""

    def __init__(self, port, forge):
        self._port = port
        self.forge = forge  # Frame -> Frame | None
        self.forged = 0

    def read_until(self, expected, size):
        data = self._port.read_until(expected, size)
        if data.endswith(expected) and len(data) > 1:
            frame = P.decode_frame(data)
            new = self.forge(frame)
            if new is not None:
                self.forged += 1
                return P.encode_frame(new)
        return data

    def __getattr__(self, name):
        return getattr(self._port, name)


class ShortFramesOnlyPort:
    """Corrupts every request longer than `limit` wire bytes: only short chunks get through."""

    def __init__(self, port, limit):
        self._port = port
        self.limit = limit

    def write(self, data):
        if len(data) > self.limit:
            data = bytearray(data)
            data[4] ^= 0x01
            data = bytes(data)
        return self._port.write(data)

    def __getattr__(self, name):
        return getattr(self._port, name)


def test_output_forged_past_the_frame_crc_is_caught_by_the_output_crc(client):
    def forge(frame):
        if frame.type == P.Msg.OUTPUT and not port.forged:
            payload = bytearray(frame.payload)
            payload[5] ^= 0x20
            return P.Frame(frame.type, frame.seq, bytes(payload))
        return None

    port = ForgingPort(client._port, forge)
    client._port = port
    x = bytes(range(64))
    result = client.infer(x)
    assert port.forged == 1
    assert result.output == twin.echo_reference(x).tobytes()
    assert client.stats.output_crc_mismatches == 1 and result.retries == 1


def test_device_reset_between_inferences_is_detected_and_model_rechecked(client):
    x = bytes(range(1, 65))
    client.infer(x)
    # Reset the device behind the client's back: its run counter restarts.
    client._port.write(P.encode_frame(P.Frame(P.Msg.RESET, 200)))
    reply = P.decode_frame(client._port.read_until(b"\x00", 64))
    assert (reply.type, reply.seq) == (P.Msg.RESET_DONE, 200)
    result = client.infer(x)
    assert result.output == twin.echo_reference(x).tobytes()
    assert client.stats.resets == 1
    # The re-check is real: a device now running another model is refused.
    client.expected_hash = bytes(8)
    client._port.write(P.encode_frame(P.Frame(P.Msg.RESET, 201)))
    client._port.read_until(b"\x00", 64)
    with pytest.raises(ModelMismatchError):
        client.infer(x)


def test_reset_command_restarts_the_run_counter_without_a_false_alarm(client):
    client.infer(bytes(64))
    client.infer(bytes(64))
    client.reset()
    _, _, _, run = client.invoke()
    assert run == 1 and client.stats.resets == 0


def test_per_layer_counts_come_with_the_inference(client):
    result = client.infer(bytes(range(64)), layers=True)
    assert result.layers is not None and len(result.layers) == 1
    assert 0 < result.layers[0] <= result.counter_value


def test_firmware_without_layer_hooks_reports_no_layers(echo_exe, tmp_path):
    from microfit.harness.hostdev import HostDevice, build_host_device

    exe = build_host_device(FIXTURES / "echo_model", tmp_path / "nohooks",
                            extra_flags=["-DMF_LAYER_PROFILE=0"])
    with HostDevice(exe) as port, DeviceClient(port) as c:
        assert c.infer(bytes(64), layers=True).layers is None


def test_chunks_shrink_on_a_line_that_only_passes_short_frames(client):
    client._port = ShortFramesOnlyPort(client._port, limit=40)
    client.retries = 10
    x = bytes(range(100, 164))
    for _ in range(3):
        assert client.infer(x).output == twin.echo_reference(x).tobytes()
    # 64 -> 32 -> 16 bytes: a 16-byte chunk makes a 25-byte frame, which passes.
    assert client.stats.smallest_chunk == 16 and MIN_CHUNK <= client.chunk <= 32
    # Two failures to shrink, one more when the chunk grew back after 8 clean requests.
    assert client.stats.retries == 3


def test_bad_layer_and_reset_requests_are_refused(client):
    with pytest.raises(P.ProtocolError, match="BAD_LENGTH"):
        client.request(P.Msg.READ_LAYERS, b"\x00")
    with pytest.raises(P.ProtocolError, match="BAD_LENGTH"):
        client.request(P.Msg.RESET, b"\x00")
    client.infer(bytes(64), layers=True)
    with pytest.raises(P.ProtocolError, match="OUT_OF_RANGE"):
        client.request(P.Msg.READ_LAYERS, P.read_layers_payload(1))


def test_loopback_url_is_named_as_such():
    with DeviceClient("loop://", timeout=0.5) as c, pytest.raises(PortError, match="loopback"):
        c.hello()


def test_validation_over_rfc2217_to_a_remote_port(echo_exe):
    """A board served by an RFC 2217 server (here the host device's pty) validates like a local one."""
    import numpy as np

    from microfit.harness.hostdev import HostDevice
    from microfit.harness.rfc2217 import Rfc2217Server
    from microfit.harness.validate import validate

    rng = np.random.default_rng(4)
    inputs = rng.integers(-128, 128, (10, 64), dtype=np.int8)
    expected = np.stack([twin.echo_reference(x) for x in inputs])
    with HostDevice(echo_exe) as pty, Rfc2217Server(pty) as url:
        assert url.startswith("rfc2217://127.0.0.1:")
        with DeviceClient(url, timeout=3.0) as c:
            c.hello(expected_hash=twin.MODEL_HASH)
            result = validate(c, inputs, expected=expected, progress=False)
    assert result.agreement == 1.0 and result.retries == 0
