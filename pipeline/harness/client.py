"""Serial client for the microfit device protocol (docs/protocol.md).

The client owns every rule that keeps a result honest: each request carries a
fresh sequence number and only a reply with that number is accepted; a reply
that fails its CRC is never used; a request the device could not read, or
that got no reply in time, is resent (every command is safe to resend) up to
`retries` times, and the resends are counted so reports can show them. After
INVOKE the device returns the CRC of the input it actually used, a run
counter and the CRC of its output, so a lost chunk, a resent INVOKE that ran
on an input the previous run had overwritten, or a device reset turns into
a retry rather than a wrong answer.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
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
    Done,
    ErrorCode,
    Frame,
    FrameError,
    Msg,
    crc16_ccitt_false,
    decode_frame,
    encode_frame,
    load_input_payload,
    parse_ack,
    parse_done,
    parse_error,
    parse_info,
    parse_layers,
    parse_output,
    read_layers_payload,
    read_output_payload,
)

# Reply frames are at most ~100 bytes; anything much longer is line noise.
_MAX_WIRE_FRAME = 512
# Reads wait at most this long before the deadline is checked again. Fixed,
# because changing a real port's timeout reconfigures the port every time.
_POLL_S = 0.05
# Adaptive chunk size: never below MIN_CHUNK bytes, doubled again after
# CLEAN_STREAK requests that passed at their first attempt.
MIN_CHUNK = 8
CLEAN_STREAK = 8


@dataclass(frozen=True)
class InferResult:
    """One inference on the device."""

    output: bytes
    ticks: int
    counter_value: int
    retries: int = 0
    layers: list[int] | None = None  # per-layer counter values, when asked for


@dataclass
class LinkStats:
    """What the link went through; reported beside the results.

    `retries` counts every resend and every redone inference. The other
    fields say why: a reply that failed its CRC or COBS check
    (`crc_errors`), no reply in time (`timeouts`), an ERROR from a device
    that could not read a request (`device_link_errors`), a reply to an
    earlier attempt (`stale_replies`, dropped), an inference whose input CRC,
    run number or output CRC did not check out (`input_crc_mismatches`,
    `stale_runs`, `output_crc_mismatches`: redone, never counted), and the
    device restarting under us (`resets`). `unterminated_frames` are replies
    whose closing delimiter was lost but that passed every check once the
    line went quiet.
    """

    requests: int = 0
    retries: int = 0
    crc_errors: int = 0
    timeouts: int = 0
    device_link_errors: int = 0
    stale_replies: int = 0
    input_crc_mismatches: int = 0
    output_crc_mismatches: int = 0
    stale_runs: int = 0
    resets: int = 0
    unterminated_frames: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    smallest_chunk: int = 0  # smallest chunk the link forced (0: never shrank)

    def to_dict(self) -> dict[str, int]:
        """JSON-ready counters."""
        return dict(self.__dict__)

    def since(self, before: LinkStats) -> LinkStats:
        """The counts accumulated after the snapshot `before`."""
        delta = {k: v - getattr(before, k) for k, v in self.__dict__.items()}
        delta["smallest_chunk"] = self.smallest_chunk
        return LinkStats(**delta)

    def copy(self) -> LinkStats:
        """A snapshot of the counters."""
        return LinkStats(**self.__dict__)


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
        self._last_run: int | None = None
        # Sequence numbers of the last few attempts, to recognise their late
        # replies (the current one is never in it). Few, because a damaged
        # seq byte in an error reply should rarely look like one of them.
        self._recent_seqs: deque[int] = deque(maxlen=4)
        self._chunk: int | None = None
        self._clean_streak = 0
        self._port: Any = None
        self._open()

    # ------------------------------------------------------------ connection

    def _open(self) -> None:
        deadline = time.monotonic() + self.connect_timeout
        while True:
            try:
                # pyserial's RFC 2217 client has no write timeout.
                write_timeout = None if self.url.startswith("rfc2217://") else self.timeout
                self._port = serial.serial_for_url(
                    self.url, baudrate=self.baud, timeout=_POLL_S, write_timeout=write_timeout
                )
                break
            except (serial.SerialException, OSError, ValueError) as exc:
                if time.monotonic() >= deadline:
                    raise PortError(self._port_advice(exc)) from exc
                time.sleep(0.05)
        # Flush whatever half-frame the device may hold from before we came.
        self._write(DELIMITER)

    def _port_advice(self, exc: BaseException) -> str:
        if self.url.startswith("rfc2217://"):
            what = (
                "is the RFC 2217 server in front of the board running (ser2net, "
                "python -m microfit.harness.rfc2217) and is this its host and port?"
            )
        elif self.url.startswith("socket://"):
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
            self.stats.bytes_sent += len(data)
        except (serial.SerialException, OSError) as exc:
            raise PortError(f"writing to {self.url} failed: {exc}") from exc

    def _replies(self, deadline: float) -> Iterator[Frame | FrameError]:
        """Frames received until `deadline`: checked frames, or the error of a bad one.

        A frame normally ends at its delimiter. When the delimiter itself was
        lost, the frame's bytes sit in the buffer while the line is quiet;
        they are then tried as a frame, and used only if they pass every
        check (COBS, length, CRC), so a lost delimiter costs one poll period
        instead of a timeout and a resend. Bytes that do not decode yet stay
        buffered: more may be on their way.
        """
        buf = bytearray()
        while time.monotonic() < deadline:
            try:
                chunk = self._port.read_until(DELIMITER, _MAX_WIRE_FRAME - len(buf))
            except (serial.SerialException, OSError) as exc:
                raise PortError(f"reading from {self.url} failed: {exc}") from exc
            if chunk:
                self.stats.bytes_received += len(chunk)
                buf += chunk
                if buf.endswith(DELIMITER):
                    wire = bytes(buf[:-1])
                    buf.clear()
                    if not wire:
                        continue  # an empty frame: a bare delimiter
                    try:
                        yield decode_frame(wire)
                    except FrameError as exc:
                        yield exc
                elif len(buf) >= _MAX_WIRE_FRAME:
                    buf.clear()  # noise without delimiters; keep listening
            elif buf:
                try:
                    frame = decode_frame(bytes(buf))
                except FrameError:
                    continue
                buf.clear()
                self.stats.unterminated_frames += 1
                yield frame

    def _discard_input(self) -> None:
        """Drop bytes already received: late replies to requests we gave up on."""
        try:
            self._port.reset_input_buffer()
        except (serial.SerialException, OSError) as exc:
            raise PortError(f"resetting the input of {self.url} failed: {exc}") from exc

    def _next_seq(self) -> int:
        self._recent_seqs.append(self._seq)
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def request(
        self,
        msg: Msg,
        payload: bytes | Callable[[], bytes] = b"",
        expect: Msg | None = None,
    ) -> Frame:
        """Send one request and return its checked reply, resending as needed.

        `payload` may be a function, called again for every attempt: chunked
        transfers use it to send a shorter chunk after a failed attempt (see
        `chunk`). Raises DeviceTimeoutError when no valid reply came after
        all attempts, ProtocolError when the device rejects the request or
        the link stays corrupt.
        """
        timeout = self.invoke_timeout if msg == Msg.INVOKE else self.timeout
        self.stats.requests += 1
        last_problem = "no reply"
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
                self._link_trouble()
            seq = self._next_seq()
            body = payload() if callable(payload) else payload
            self._discard_input()
            # A second delimiter after the frame: if a noisy line eats the
            # first, the device still sees the frame end instead of waiting
            # (and the host timing out). An empty frame is ignored.
            self._write(encode_frame(Frame(int(msg), seq, body)) + DELIMITER)
            deadline = time.monotonic() + timeout
            for reply in self._replies(deadline):
                if isinstance(reply, FrameError):
                    # A damaged frame (bad CRC, or a flipped bit that broke
                    # the COBS structure) is most likely our reply: ask again.
                    self.stats.crc_errors += 1
                    last_problem = f"corrupt reply ({reply})"
                    break
                if reply.type == Msg.ERROR and parse_error(reply.payload).is_link_error:
                    if reply.seq in self._recent_seqs:
                        # The device could not read one of our earlier
                        # attempts; this one may still be on its way.
                        self.stats.stale_replies += 1
                        continue
                    # The device could not read a frame. Its seq byte may be
                    # the damaged one, so do not insist on ours: resending is
                    # safe (see docs/protocol.md) and a duplicate reply is
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
                if reply.type == int(msg) and reply.seq == seq and reply.payload == body:
                    # Our own request came back: nothing but a wire answers
                    # like that (loop://, a loopback plug, a terminal echoing).
                    raise PortError(
                        f"{self.url} echoes what is sent instead of answering: it is a loopback "
                        "(loop://, a jumper between TX and RX, a tty with echo on), not a "
                        "device running microfit firmware"
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
                if not attempt:
                    self._link_clean()
                return reply
            else:
                self.stats.timeouts += 1
                last_problem = f"no reply within {timeout:g} s"
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

    # ------------------------------------------------------------ chunk size

    @property
    def chunk(self) -> int:
        """Bytes per LOAD_INPUT / READ_OUTPUT chunk at the moment.

        It starts at the device's max_chunk and halves (down to MIN_CHUNK)
        on every failed attempt: on a noisy line a long frame is likely to be
        hit, a short one gets through. After CLEAN_STREAK requests in a row
        that passed at the first attempt it doubles again.
        """
        limit = self.info.max_chunk if self.info is not None else MIN_CHUNK
        return max(1, min(self._chunk or limit, limit))

    def _link_trouble(self) -> None:
        self._clean_streak = 0
        self._chunk = max(MIN_CHUNK, self.chunk // 2)
        self.stats.smallest_chunk = min(self.stats.smallest_chunk or self._chunk, self._chunk)

    def _link_clean(self) -> None:
        self._clean_streak += 1
        if self._clean_streak >= CLEAN_STREAK and self._chunk is not None:
            self._clean_streak = 0
            self._chunk = self.chunk * 2

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
        if expected_hash is not None:
            self.expected_hash = expected_hash
        wanted = self.expected_hash
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
        offset = 0
        while offset < len(data):
            sent: list[int] = []

            def payload(offset: int = offset, sent: list[int] = sent) -> bytes:
                part = data[offset : offset + self.chunk]
                sent.append(len(part))
                return load_input_payload(offset, part)

            reply = self.request(Msg.LOAD_INPUT, payload)
            got_offset, count = parse_ack(reply.payload)
            if got_offset != offset or count != sent[-1]:
                raise ProtocolError(
                    f"sent input bytes {offset}..{offset + sent[-1]}, device acknowledged "
                    f"{got_offset}..{got_offset + count}"
                )
            offset += count

    def invoke_done(self) -> Done:
        """Run the model once; the device's DONE reply, checked for a reset.

        The run counter only grows while the device is up; a DONE whose run
        is not ahead of the previous one means the device restarted between
        the two (power glitch, watchdog, someone pressed reset). The model
        hash is then checked again, since a restarted board may have been
        reflashed with another model.
        """
        done = parse_done(self.request(Msg.INVOKE).payload)
        last = self._last_run
        self._last_run = done.run
        if last is not None and not 0 < (done.run - last) % 65536 < 32768:
            self.stats.resets += 1
            self.info = None
            self.hello()
        return done

    def invoke(self) -> tuple[int, int, int, int]:
        """Run the model once; returns (ticks, counter, input_crc, run)."""
        done = self.invoke_done()
        return done.ticks, done.counter, done.input_crc, done.run

    def read_output(self, expected_run: int | None = None) -> bytes:
        """Read the whole output of the last inference."""
        info = self._ensure_info()
        out = bytearray()
        while len(out) < info.output_size:
            offset = len(out)
            asked: list[int] = []

            def payload(offset: int = offset, asked: list[int] = asked) -> bytes:
                asked.append(min(self.chunk, info.output_size - offset))
                return read_output_payload(offset, asked[-1])

            got_offset, run, data = parse_output(self.request(Msg.READ_OUTPUT, payload).payload)
            if got_offset != offset or len(data) != asked[-1]:
                raise ProtocolError(
                    f"asked for output bytes {offset}..{offset + asked[-1]}, device sent "
                    f"{got_offset}..{got_offset + len(data)}"
                )
            if expected_run is not None and run != expected_run:
                raise _StaleRun(run, expected_run)
            out += data
        return bytes(out)

    def read_layers(self, expected_run: int | None = None) -> list[int] | None:
        """Per-layer counter values of the last inference (cycles or instructions).

        Index i is the model's node i (MODEL_LAYER_BEGIN/END(i) in model.c);
        nodes that generate no code (a reshape view) read 0. None when the
        firmware was built without the layer hooks or predates the command.
        """
        values: list[int] = []
        count: int | None = None
        while count is None or len(values) < count:
            try:
                reply = self.request(Msg.READ_LAYERS, read_layers_payload(len(values)))
            except ProtocolError as exc:
                if "UNKNOWN_COMMAND" in str(exc):
                    return None  # firmware older than the command
                raise
            layers = parse_layers(reply.payload)
            if expected_run is not None and layers.run != expected_run:
                raise _StaleRun(layers.run, expected_run)
            if layers.first != len(values):
                raise ProtocolError(
                    f"asked for layers from {len(values)}, device sent from {layers.first}"
                )
            count = layers.count
            if count and not layers.counters:
                raise ProtocolError(f"device reports {count} layers but sent none")
            values += layers.counters
        return values[:count] if count else None

    def reset(self) -> None:
        """Reset the protocol state on the device: run counter, input, layer times.

        A soft reset, for a clean start of a measurement; it does not reboot
        the board.
        """
        self.request(Msg.RESET)
        self._last_run = None

    def infer(self, input: bytes, layers: bool = False) -> InferResult:
        """Load `input`, run the model, read its output (and per-layer counts if asked).

        Nothing is returned that did not check out: the input CRC the device
        reports must equal that of what was sent, every output chunk must
        belong to this run, and the output must match the CRC the device
        computed (when it sends one). On a mismatch (a lost chunk, a device
        reset, a corrupted reply that slipped past a frame CRC) the whole
        inference is redone and counted as a retry.
        """
        data = bytes(input)
        retries_before = self.stats.retries
        expected_crc = crc16_ccitt_false(data)
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
            self.load_input(data)
            done = self.invoke_done()
            if done.input_crc != expected_crc:
                self.stats.input_crc_mismatches += 1
                problem = (
                    f"device ran on an input with CRC 0x{done.input_crc:04x}, host sent "
                    f"0x{expected_crc:04x}"
                )
                continue
            try:
                output = self.read_output(expected_run=done.run)
                layer_counts = self.read_layers(expected_run=done.run) if layers else None
            except _StaleRun as exc:
                self.stats.stale_runs += 1
                problem = str(exc)
                continue
            if done.output_crc is not None and crc16_ccitt_false(output) != done.output_crc:
                self.stats.output_crc_mismatches += 1
                problem = (
                    f"output read back has CRC 0x{crc16_ccitt_false(output):04x}, the device "
                    f"computed 0x{done.output_crc:04x}"
                )
                continue
            return InferResult(
                output=output,
                ticks=done.ticks,
                counter_value=done.counter,
                retries=self.stats.retries - retries_before,
                layers=layer_counts,
            )
        raise ProtocolError(f"inference on {self.url} failed after {self.retries + 1} attempts: {problem}")


class _StaleRun(ProtocolError):
    def __init__(self, got: int, wanted: int) -> None:
        super().__init__(
            f"output belongs to run {got}, not run {wanted}: the device reset or ran again"
        )
