"""Fault injection: a proxy that drops, corrupts, duplicates and delays bytes.

The proxy is checked alone against a plain TCP echo server, then put between
the client and QEMU running the echo fixture firmware: validation over a link
that damages several percent of its bytes must still finish, with every
result equal to the Python twin's and the retries counted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from microfit.harness.client import DeviceClient
from microfit.harness.faultproxy import FaultConfig, FaultProxy
from microfit.harness.validate import validate

FIXTURES = Path(__file__).parent / "fixtures"


def load_twin():
    spec = importlib.util.spec_from_file_location("echo_twin", FIXTURES / "echo_model" / "twin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


twin = load_twin()


class EchoServer:
    """A TCP server that sends back whatever it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


def roundtrip(config: FaultConfig, payload: bytes, wait: float = 0.3) -> tuple[bytes, FaultProxy]:
    server = EchoServer()
    proxy = FaultProxy(("127.0.0.1", server.port), config)
    try:
        url = proxy.start()
        host, port = url.removeprefix("socket://").split(":")
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(payload)
            conn.settimeout(wait)
            got = bytearray()
            try:
                while chunk := conn.recv(65536):
                    got += chunk
            except TimeoutError:
                pass
    finally:
        proxy.close()
        server.close()
    return bytes(got), proxy


def test_clean_proxy_forwards_bytes_unchanged_both_ways():
    payload = bytes(range(256)) * 40
    got, proxy = roundtrip(FaultConfig(), payload)
    assert got == payload
    assert proxy.stats.to_device.bytes_in == proxy.stats.to_host.bytes_out == len(payload)
    assert proxy.stats.to_device.damaged == proxy.stats.to_host.damaged == 0


def test_fault_rates_are_applied_per_byte_and_counted():
    payload = bytes(range(1, 256)) * 80  # 20,400 bytes, no zeros
    config = FaultConfig(drop=0.02, corrupt=0.03, duplicate=0.01, seed=5, directions="to_device")
    got, proxy = roundtrip(config, payload, wait=0.5)
    s = proxy.stats.to_device
    assert s.bytes_in == len(payload)
    # Counts near their expectation (binomial, n = 20,400), and consistent.
    assert 300 < s.dropped < 520 and 480 < s.corrupted < 750 and 130 < s.duplicated < 290
    assert s.bytes_out == len(payload) - s.dropped + s.duplicated == len(got)
    assert proxy.stats.to_host.damaged == 0  # only one direction was asked for


def test_same_seed_damages_the_same_bytes():
    payload = bytes(range(1, 200)) * 10
    config = FaultConfig(corrupt=0.05, drop=0.05, seed=9, directions="to_device")
    first, _ = roundtrip(config, payload)
    second, _ = roundtrip(config, payload)
    other, _ = roundtrip(FaultConfig(corrupt=0.05, drop=0.05, seed=10, directions="to_device"),
                         payload)
    assert first == second != payload
    assert other != first


def test_delays_stall_but_keep_order():
    payload = bytes(range(1, 101))
    started = time.monotonic()
    got, proxy = roundtrip(FaultConfig(delay=0.2, max_delay_s=0.01, seed=1), payload, wait=0.4)
    assert got == payload
    assert proxy.stats.to_device.delayed + proxy.stats.to_host.delayed > 10
    assert time.monotonic() - started > 0.4


@pytest.mark.parametrize("kwargs", [{"drop": 1.5}, {"drop": 0.6, "corrupt": 0.6},
                                    {"directions": "sideways"}])
def test_invalid_fault_configs_are_rejected(kwargs):
    with pytest.raises(ValueError):
        FaultConfig(**kwargs)


# ------------------------------------------------------------------ over QEMU

needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
    reason="needs qemu-system-arm and arm-none-eabi-gcc: apt-get install qemu-system-arm "
    "gcc-arm-none-eabi libnewlib-arm-none-eabi",
)


@pytest.fixture(scope="module")
def echo_elf(tmp_path_factory):
    from microfit.target.boards import load_board
    from microfit.target.project import render_project
    from microfit.toolchain.firmware import build_firmware

    board = load_board("qemu-mps2-an386")
    out = tmp_path_factory.mktemp("fault_an386")
    return board, build_firmware(render_project(board, FIXTURES / "echo_model", out), board).elf


@needs_qemu
@pytest.mark.qemu
def test_validation_through_a_lossy_link_accepts_no_wrong_result(echo_elf):
    """1% of bytes corrupted, 1% dropped, 1% duplicated, 1% delayed, in both directions."""
    from microfit.emulate.qemu import QemuSession

    board, elf = echo_elf
    rng = np.random.default_rng(77)
    inputs = rng.integers(-128, 128, (60, 64), dtype=np.int8)
    expected = np.stack([twin.echo_reference(x) for x in inputs])
    config = FaultConfig(corrupt=0.01, drop=0.01, duplicate=0.01, delay=0.01,
                         max_delay_s=0.002, seed=2026)
    with QemuSession(board, elf) as device_url:
        proxy = FaultProxy(device_url, config)
        with proxy as url, DeviceClient(url, timeout=0.3, invoke_timeout=1.0, retries=40) as client:
            client.hello(expected_hash=twin.MODEL_HASH)
            result = validate(client, inputs, labels=expected.argmax(axis=1), expected=expected,
                              progress=False)
    np.testing.assert_array_equal(result.outputs, expected)
    assert result.agreement == 1.0 and result.mismatches == []
    damaged = proxy.stats.to_device.damaged + proxy.stats.to_host.damaged
    link = result.link
    # The link really was bad, and the client noticed and recovered.
    assert proxy.stats.to_device.corrupted > 50 and proxy.stats.to_host.corrupted > 10
    assert result.retries > 50
    assert link["crc_errors"] + link["device_link_errors"] > 50
    figures = {"samples": result.samples, "proxy": proxy.stats.to_dict(), "link": link,
               "retries": result.retries, "damaged_bytes": damaged,
               "wall_time_s": round(result.wall_time_s, 2)}
    out = os.environ.get("MICROFIT_FAULT_FIGURES")
    if out:
        Path(out).write_text(json.dumps(figures, indent=2))
