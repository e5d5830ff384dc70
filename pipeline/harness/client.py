"""Serial client for the microfit device protocol (docs/protocol.md).

The client owns every rule that keeps a result honest: each request carries a
fresh sequence number and only a reply with that number is accepted; a reply
that fails its CRC is never used; a request the device could not read, or
that got no reply in time, is resent (every command is idempotent) up to
`retries` times, and the resends are counted so reports can show them. After
INVOKE the device returns the CRC of the input it actually used and a run
counter, so a lost chunk or a device reset turns into a retry rather than a
wrong answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import serial

from microfit.errors import (
    DeviceError,
    DeviceTimeoutError,
    ModelMismatchError,
    PortError,
    ProtocolError,
)
from microfit.harness.protocol import (
    DELIMITER,
    PROTOCOL_VERSION,
    DeviceInfo,
    ErrorCode,
    Frame,
    FrameError,
    Msg,
    crc16_ccitt_false,
    decode_frame,
    encode_frame,
    load_input_payload,
    parse_done,
    parse_error,
    parse_info,
    parse_output,
    read_output_payload,
)

# Reply frames are at most ~100 bytes; anything much longer is line noise.
_MAX_WIRE_FRAME = 512
# Reads wait at most this long before the deadline is checked again. Fixed,
# because changing a real port's timeout reconfigures the port every time.
_POLL_S = 0.05


@dataclass(frozen=True)
class InferResult:
    """One inference on the device."""

    output: bytes
    ticks: int
    counter_value: int
    retries: int = 0


@dataclass
class LinkStats:
    """What the link went through; reported beside the results."""

    requests: int = 0
    retries: int = 0
    crc_errors: int = 0
    timeouts: int = 0
    device_link_errors: int = 0
    stale_replies: int = 0


class DeviceClient:
    """Talk to a device (or emulator) running microfit firmware.

    `url` is anything pyserial's serial_for_url accepts: a port name such as
    /dev/ttyACM0 or COM3, or socket://host:port for QEMU. Opening is retried
    for `connect_timeout` seconds because an emulator or a freshly flashed
    board may not be listening yet. `timeout` bounds the wait for each reply,
    `invoke_timeout` the wait for INVOKE (which runs the model).
    """

    def __init__(
        self,
        url: str,
        baud: int = 115200,
        timeout: float = 5.0,
        retries: int = 3,
        *,
        connect_timeout: float = 5.0,
        invoke_timeout: float = 60.0,
        expected_hash: bytes | str | None = None,
    ) -> None:
        self.url = url
        self.baud = baud
        self.timeout = timeout
        self.retries = retries
        self.connect_timeout = connect_timeout
        self.invoke_timeout = max(invoke_timeout, timeout)
        if isinstance(expected_hash, str):
            expected_hash = bytes.fromhex(expected_hash)
        self.expected_hash = expected_hash
        self.stats = LinkStats()
        self.info: DeviceInfo | None = None
        self._seq = 0
        self._port: Any = None
        self._open()

    # ------------------------------------------------------------ connection

    def _open(self) -> None:
        deadline = time.monotonic() + self.connect_timeout
        while True:
            try:
                self._port = serial.serial_for_url(
                    self.url, baudrate=self.baud, timeout=_POLL_S, write_timeout=self.timeout
                )
                break
            except (serial.SerialException, OSError, ValueError) as exc:
                if time.monotonic() >= deadline:
                    raise PortError(self._port_advice(exc)) from exc
                time.sleep(0.05)
        # Flush whatever half-frame the device may hold from before we came.
        self._write(DELIMITER)

    def _port_advice(self, exc: BaseException) -> str:
        if self.url.startswith("socket://"):
            what = (
                "nothing is listening there: is the emulator running (microfit emulate) "
                "and is this its port?"
            )
        else:
            what = (
                "check the board is plugged in, the port name is right (list ports with "
                "`python -m serial.tools.list_ports`), no other program (serial monitor, IDE) "
                "holds it, and you may open it (Linux: the dialout group)"
            )
        return (
            f"cannot open serial port {self.url} after {self.connect_timeout:g} s: {exc}. {what}"
        )

    def close(self) -> None:
        """Close the port; the client cannot be used afterwards."""
        if self._port is not None:
            self._port.close()
            self._port = None

    def __enter__(self) -> DeviceClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DeviceClient({self.url!r}, retries={self.stats.retries})"

    # ------------------------------------------------------------ transport

    def _write(self, data: bytes) -> None:
        if self._port is None:
            raise PortError(f"serial port {self.url} is closed")
        try:
            self._port.write(data)
            self._port.flush()
        except (serial.SerialException, OSError) as exc:
            raise PortError(f"writing to {self.url} failed: {exc}") from exc

    def _read_wire_frame(self, deadline: float) -> bytes | None:
        """Bytes up to the next delimiter, or None when the deadline passes."""
        buf = bytearray()
        while True:
            if time.monotonic() >= deadline:
                return None
            try:
                chunk = self._port.read_until(DELIMITER, _MAX_WIRE_FRAME - len(buf))
            except (serial.SerialException, OSError) as exc:
                raise PortError(f"reading from {self.url} failed: {exc}") from exc
            buf += chunk
            if buf.endswith(DELIMITER):
                if len(buf) == 1:
                    buf.clear()  # an empty frame: a bare delimiter
                    continue
                return bytes(buf)
            if len(buf) >= _MAX_WIRE_FRAME:
                buf.clear()  # noise without delimiters; keep listening

    def _discard_input(self) -> None:
        """Drop bytes already received: late replies to requests we gave up on."""
        try:
            self._port.reset_input_buffer()
        except (serial.SerialException, OSError) as exc:
            raise PortError(f"resetting the input of {self.url} failed: {exc}") from exc

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def request(self, msg: Msg, payload: bytes = b"", expect: Msg | None = None) -> Frame:
        """Send one request and return its checked reply, resending as needed.

        Raises DeviceTimeoutError when no valid reply came after all attempts,
        ProtocolError when the device rejects the request or the link stays
        corrupt.
        """
        timeout = self.invoke_timeout if msg == Msg.INVOKE else self.timeout
        self.stats.requests += 1
        last_problem = "no reply"
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
            seq = self._next_seq()
            self._discard_input()
            self._write(encode_frame(Frame(int(msg), seq, payload)))
            deadline = time.monotonic() + timeout
            while True:
                wire = self._read_wire_frame(deadline)
                if wire is None:
                    self.stats.timeouts += 1
                    last_problem = f"no reply within {timeout:g} s"
                    break
                try:
                    reply = decode_frame(wire)
                except FrameError as exc:
                    # A damaged frame (bad CRC, or a flipped bit that broke
                    # the COBS structure) is most likely our reply: ask again.
                    self.stats.crc_errors += 1
                    last_problem = f"corrupt reply ({exc})"
                    break
                if reply.type == Msg.ERROR and parse_error(reply.payload).is_link_error:
                    # The device could not read a frame. Its seq byte may be
                    # the damaged one, so do not insist on ours: resending is
                    # safe (commands are idempotent) and a duplicate reply is
                    # dropped as stale.
                    self.stats.device_link_errors += 1
                    last_problem = (
                        f"device could not read the request ({parse_error(reply.payload).code_name})"
                    )
                    break
                if reply.type == Msg.ERROR and parse_error(reply.payload).code == ErrorCode.DEVICE_FAULT:
                    # Whatever its seq: a crashed device answers nothing else.
                    raise DeviceError(
                        f"device at {self.url} crashed while handling {msg.name} and has "
                        f"stopped (fault {parse_error(reply.payload).detail}; on Cortex-M the "
                        "exception number, 3 = HardFault). Reset it, or restart the emulator."
                    )
                if reply.seq != seq:
                    self.stats.stale_replies += 1
                    continue
                if reply.type == Msg.ERROR:
                    err = parse_error(reply.payload)
                    raise ProtocolError(
                        f"device at {self.url} rejected {msg.name}: {err.code_name} "
                        f"(detail {err.detail})"
                    )
                wanted = expect if expect is not None else Msg(int(msg) | 0x80)
                if reply.type != wanted:
                    raise ProtocolError(
                        f"device at {self.url} answered {msg.name} with frame type "
                        f"0x{reply.type:02x}, expected {wanted.name}"
                    )
                return reply
        attempts = self.retries + 1
        if last_problem.startswith("no reply"):
            raise DeviceTimeoutError(
                f"device at {self.url} did not answer {msg.name} after {attempts} attempts "
                f"({last_problem} each). Check the firmware is running, the port and the "
                f"baud rate ({self.baud})."
            )
        raise ProtocolError(
            f"{msg.name} to {self.url} failed after {attempts} attempts: {last_problem}"
        )

    # ------------------------------------------------------------ commands

    def hello(self, expected_hash: bytes | str | None = None) -> DeviceInfo:
        """Ask the device what it runs; checks the model hash when one is expected."""
        reply = self.request(Msg.HELLO)
        info = parse_info(reply.payload)
        if info.protocol_version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"device speaks protocol v{info.protocol_version}, this microfit speaks "
                f"v{PROTOCOL_VERSION}: rebuild the firmware with this microfit version"
            )
        if isinstance(expected_hash, str):
            expected_hash = bytes.fromhex(expected_hash)
        wanted = expected_hash if expected_hash is not None else self.expected_hash
        if wanted is not None and info.model_hash != wanted:
            raise ModelMismatchError(
                f"device at {self.url} ({info.board_name}) runs model {info.model_hash.hex()}, "
                f"expected {wanted.hex()}: build and flash this run's firmware"
            )
        self.info = info
        return info

    def _ensure_info(self) -> DeviceInfo:
        return self.info if self.info is not None else self.hello()

    def load_input(self, data: bytes) -> None:
        """Write a whole input into the device's model_input(), chunk by chunk."""
        info = self._ensure_info()
        if len(data) != info.input_size:
            raise ValueError(f"input has {len(data)} bytes, the device's model expects {info.input_size}")
        chunk = max(1, info.max_chunk)
        for offset in range(0, len(data), chunk):
            part = data[offset : offset + chunk]
            self.request(Msg.LOAD_INPUT, load_input_payload(offset, part))

    def invoke(self) -> tuple[int, int, int, int]:
        """Run the model once; returns (ticks, counter, input_crc, run)."""
        done = parse_done(self.request(Msg.INVOKE).payload)
        return done.ticks, done.counter, done.input_crc, done.run

    def read_output(self, expected_run: int | None = None) -> bytes:
        """Read the whole output of the last inference."""
        info = self._ensure_info()
        out = bytearray()
        chunk = max(1, info.max_chunk)
        for offset in range(0, info.output_size, chunk):
            length = min(chunk, info.output_size - offset)
            got_offset, run, data = parse_output(
                self.request(Msg.READ_OUTPUT, read_output_payload(offset, length)).payload
            )
            if got_offset != offset or len(data) != length:
                raise ProtocolError(
                    f"asked for output bytes {offset}..{offset + length}, device sent "
                    f"{got_offset}..{got_offset + len(data)}"
                )
            if expected_run is not None and run != expected_run:
                raise _StaleRun(run, expected_run)
            out += data
        return bytes(out)

    def infer(self, input: bytes) -> InferResult:
        """Load `input`, run the model, read its output.

        The input CRC and run counter the device reports are checked; on a
        mismatch (a lost chunk, a device reset) the whole inference is redone,
        counted as a retry.
        """
        data = bytes(input)
        retries_before = self.stats.retries
        expected_crc = crc16_ccitt_false(data)
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
            self.load_input(data)
            ticks, counter, input_crc, run = self.invoke()
            if input_crc != expected_crc:
                problem = (
                    f"device ran on an input with CRC 0x{input_crc:04x}, host sent 0x{expected_crc:04x}"
                )
                continue
            try:
                output = self.read_output(expected_run=run)
            except _StaleRun as exc:
                problem = str(exc)
                continue
            return InferResult(
                output=output,
                ticks=ticks,
                counter_value=counter,
                retries=self.stats.retries - retries_before,
            )
        raise ProtocolError(f"inference on {self.url} failed after {self.retries + 1} attempts: {problem}")


class _StaleRun(ProtocolError):
    def __init__(self, got: int, wanted: int) -> None:
        super().__init__(
            f"output belongs to run {got}, not run {wanted}: the device reset or ran again"
        )
