"""microfit serial protocol v1, host side: framing, CRC and message layouts.

Pure Python with no I/O, so every rule here is unit-tested without a device.
The device side is firmware_templates/common/mf_frame.c and mf_protocol.c;
the two must agree byte for byte, and docs/protocol.md is the specification.

Wire format: each frame is COBS(type, seq, payload, crc16_le) + b"\\x00". The
CRC is CRC-16/CCITT-FALSE over type, seq and payload.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from microfit.errors import ProtocolError

PROTOCOL_VERSION = 1
DELIMITER = b"\x00"
FRAME_OVERHEAD = 4  # type, seq, crc16
# Largest decoded frame a device accepts (MF_FRAME_MAX in mf_frame.h).
DEVICE_FRAME_MAX = 96


class Msg(IntEnum):
    """Frame types. Replies are request | 0x80, or ERROR."""

    HELLO = 0x01
    LOAD_INPUT = 0x02
    INVOKE = 0x03
    READ_OUTPUT = 0x04
    READ_LAYERS = 0x05
    RESET = 0x06
    INFO = 0x81
    ACK = 0x82
    DONE = 0x83
    OUTPUT = 0x84
    LAYERS = 0x85
    RESET_DONE = 0x86
    ERROR = 0xFF


class ErrorCode(IntEnum):
    """Codes in an ERROR reply's first payload byte."""

    BAD_CRC = 0x01
    BAD_FRAMING = 0x02
    FRAME_TOO_LONG = 0x03
    UNKNOWN_COMMAND = 0x04
    BAD_LENGTH = 0x05
    OUT_OF_RANGE = 0x06
    DEVICE_FAULT = 0x07

    @property
    def is_link_error(self) -> bool:
        """True when the request was damaged in transit, so resending can help."""
        return self in (ErrorCode.BAD_CRC, ErrorCode.BAD_FRAMING, ErrorCode.FRAME_TOO_LONG)


# What the device's counter counts. "nanoseconds" is the host build's wall
# clock (firmware_templates/host/serial): time, but not a microcontroller's.
COUNTER_KINDS = {0: "cycles", 1: "instructions", 2: "nanoseconds"}


class FrameError(ProtocolError):
    """Bytes between two delimiters are not a valid frame (COBS or length)."""


class CrcError(FrameError):
    """A frame decoded but its CRC does not match: it must not be trusted."""


# ---------------------------------------------------------------- CRC, COBS


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _crc16_table()


def crc16_ccitt_false(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no xorout)."""
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[(crc >> 8) ^ byte]
    return crc


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode `data`; the result has no zero bytes (delimiter not added)."""
    out = bytearray()
    start, n = 0, len(data)
    while True:
        end = start
        while end < n and data[end] != 0 and end - start < 254:
            end += 1
        run = end - start
        out.append(run + 1)
        out += data[start:end]
        start = end
        if start >= n:
            break
        if run < 254:
            start += 1  # the zero this block stands for
            if start == n:
                out.append(1)  # data ended in a zero
                break
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Invert cobs_encode. Raises FrameError on a zero byte or a truncated block."""
    out = bytearray()
    i, n = 0, len(data)
    if n == 0:
        raise FrameError("empty COBS block")
    while i < n:
        code = data[i]
        if code == 0:
            raise FrameError(f"zero byte inside a COBS frame at offset {i}")
        end = i + code
        if end > n:
            raise FrameError(f"COBS block at offset {i} needs {code - 1} bytes, {n - i - 1} left")
        block = data[i + 1 : end]
        if 0 in block:
            raise FrameError("zero byte inside a COBS frame")
        out += block
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


# ---------------------------------------------------------------- frames


@dataclass(frozen=True)
class Frame:
    """One decoded, CRC-checked frame."""

    type: int
    seq: int
    payload: bytes = b""

    def __repr__(self) -> str:
        try:
            name = Msg(self.type).name
        except ValueError:
            name = f"0x{self.type:02x}"
        return f"Frame({name}, seq={self.seq}, {len(self.payload)} B)"


def frame_body(frame: Frame) -> bytes:
    """The decoded bytes of a frame: type, seq, payload, CRC (little-endian)."""
    head = bytes((frame.type & 0xFF, frame.seq & 0xFF)) + bytes(frame.payload)
    return head + struct.pack("<H", crc16_ccitt_false(head))


def encode_frame(frame: Frame) -> bytes:
    """Wire bytes for `frame`, ending with the 0x00 delimiter."""
    return cobs_encode(frame_body(frame)) + DELIMITER


def decode_frame(wire: bytes) -> Frame:
    """Parse the bytes of one frame (delimiter stripped or not).

    Raises CrcError when the CRC fails and FrameError when the bytes are not a
    frame at all; never returns a frame that failed a check.
    """
    if wire.endswith(DELIMITER):
        wire = wire[:-1]
    body = cobs_decode(wire)
    if len(body) < FRAME_OVERHEAD:
        raise FrameError(f"frame of {len(body)} bytes is shorter than the {FRAME_OVERHEAD}-byte minimum")
    (received,) = struct.unpack_from("<H", body, len(body) - 2)
    computed = crc16_ccitt_false(body[:-2])
    if received != computed:
        raise CrcError(f"CRC mismatch: frame says 0x{received:04x}, bytes give 0x{computed:04x}")
    return Frame(type=body[0], seq=body[1], payload=bytes(body[2:-2]))


# ---------------------------------------------------------------- payloads


def f32_from_bits(bits: int) -> float:
    """The float32 whose IEEE-754 bit pattern is `bits` (firmware sends bits, not floats)."""
    return struct.unpack("<f", struct.pack("<I", bits & 0xFFFFFFFF))[0]


@dataclass(frozen=True)
class DeviceInfo:
    """What a device says about itself in its INFO reply."""

    protocol_version: int
    counter_kind: str
    max_chunk: int
    flags: int
    model_hash: bytes
    input_size: int
    output_size: int
    input_scale_bits: int
    input_zero_point: int
    output_scale_bits: int
    output_zero_point: int
    clock_hz: int
    counter_per_tick: int
    arena_size: int
    macs: int
    board_name: str

    def to_json(self) -> dict[str, object]:
        """JSON-ready form (hash as hex, scales decoded beside their bits)."""
        out: dict[str, object] = dict(self.__dict__)
        out["model_hash"] = self.model_hash.hex()
        out["input_scale"] = self.input_scale
        out["output_scale"] = self.output_scale
        return out

    @property
    def model_hash_hex(self) -> str:
        """The model hash as 16 hex digits, as reports print it."""
        return self.model_hash.hex()

    @property
    def input_scale(self) -> float:
        """Input quantization scale as a float."""
        return f32_from_bits(self.input_scale_bits)

    @property
    def output_scale(self) -> float:
        """Output quantization scale as a float."""
        return f32_from_bits(self.output_scale_bits)


_INFO_FIXED = struct.Struct("<BBBB8sIIIiIiIIIIB")


def pack_info(info: DeviceInfo) -> bytes:
    """INFO payload for `info` (used by tests and simulated devices)."""
    kind = {v: k for k, v in COUNTER_KINDS.items()}[info.counter_kind]
    name = info.board_name.encode("ascii")
    return _INFO_FIXED.pack(
        info.protocol_version, kind, info.max_chunk, info.flags, info.model_hash,
        info.input_size, info.output_size, info.input_scale_bits, info.input_zero_point,
        info.output_scale_bits, info.output_zero_point, info.clock_hz, info.counter_per_tick,
        info.arena_size, info.macs, len(name),
    ) + name


def parse_info(payload: bytes) -> DeviceInfo:
    """Decode an INFO payload. Trailing bytes (fields of later versions) are ignored."""
    if len(payload) < _INFO_FIXED.size:
        raise ProtocolError(f"INFO payload has {len(payload)} bytes, needs at least {_INFO_FIXED.size}")
    (version, kind, max_chunk, flags, model_hash, in_size, out_size, in_scale, in_zp,
     out_scale, out_zp, clock_hz, per_tick, arena, macs, name_len) = _INFO_FIXED.unpack_from(payload)
    end = _INFO_FIXED.size + name_len
    if len(payload) < end:
        raise ProtocolError("INFO payload is shorter than its board name length says")
    if kind not in COUNTER_KINDS:
        raise ProtocolError(f"INFO names unknown counter kind {kind}")
    return DeviceInfo(
        protocol_version=version, counter_kind=COUNTER_KINDS[kind], max_chunk=max_chunk,
        flags=flags, model_hash=model_hash, input_size=in_size, output_size=out_size,
        input_scale_bits=in_scale, input_zero_point=in_zp, output_scale_bits=out_scale,
        output_zero_point=out_zp, clock_hz=clock_hz, counter_per_tick=per_tick,
        arena_size=arena, macs=macs,
        board_name=payload[_INFO_FIXED.size:end].decode("ascii", errors="replace"),
    )


def load_input_payload(offset: int, chunk: bytes) -> bytes:
    """LOAD_INPUT payload: offset u16, then the bytes to write there."""
    return struct.pack("<H", offset) + bytes(chunk)


def parse_ack(payload: bytes) -> tuple[int, int]:
    """Decode an ACK payload into (offset, count)."""
    if len(payload) < 3:
        raise ProtocolError(f"ACK payload has {len(payload)} bytes, needs 3")
    offset, count = struct.unpack_from("<HB", payload)
    return offset, count


def read_output_payload(offset: int, length: int) -> bytes:
    """READ_OUTPUT payload: offset u16, length u8."""
    return struct.pack("<HB", offset, length)


@dataclass(frozen=True)
class Done:
    """DONE reply: how long model_invoke took, and proof of which input it used.

    `output_crc` (CRC-16 of the whole output, appended in protocol v1.1) lets
    the host check the output it reassembles from chunks end to end; None
    when the firmware predates it.
    """

    ticks: int
    counter: int
    input_crc: int
    run: int
    output_crc: int | None = None


def parse_done(payload: bytes) -> Done:
    """Decode a DONE payload (ticks u32, counter u32, input CRC u16, run u16[, output CRC u16])."""
    if len(payload) < 12:
        raise ProtocolError(f"DONE payload has {len(payload)} bytes, needs 12")
    ticks, counter, input_crc, run = struct.unpack_from("<IIHH", payload)
    output_crc = struct.unpack_from("<H", payload, 12)[0] if len(payload) >= 14 else None
    return Done(ticks, counter, input_crc, run, output_crc)


def read_layers_payload(first: int) -> bytes:
    """READ_LAYERS payload: index of the first layer wanted, u16."""
    return struct.pack("<H", first)


@dataclass(frozen=True)
class Layers:
    """LAYERS reply: per-layer counter values of the last inference, one slice."""

    run: int
    count: int  # layers the firmware recorded (0: built without layer hooks)
    first: int
    counters: tuple[int, ...]


def parse_layers(payload: bytes) -> Layers:
    """Decode a LAYERS payload (run u16, count u16, first u16, then u32 counters)."""
    if len(payload) < 6 or (len(payload) - 6) % 4:
        raise ProtocolError(f"LAYERS payload of {len(payload)} bytes is not 6 + 4k")
    run, count, first = struct.unpack_from("<HHH", payload)
    n = (len(payload) - 6) // 4
    return Layers(run, count, first, struct.unpack_from(f"<{n}I", payload, 6))


def parse_output(payload: bytes) -> tuple[int, int, bytes]:
    """Decode an OUTPUT payload into (offset, run, data)."""
    if len(payload) < 4:
        raise ProtocolError(f"OUTPUT payload has {len(payload)} bytes, needs at least 4")
    offset, run = struct.unpack_from("<HH", payload)
    return offset, run, bytes(payload[4:])


@dataclass(frozen=True)
class DeviceErrorReply:
    """An ERROR reply's content."""

    code: int
    request: int
    detail: int

    @property
    def code_name(self) -> str:
        """Symbolic name of the code, or its number when unknown."""
        try:
            return ErrorCode(self.code).name
        except ValueError:
            return f"code {self.code}"

    @property
    def is_link_error(self) -> bool:
        """True when the device could not read the request (resend it)."""
        try:
            return ErrorCode(self.code).is_link_error
        except ValueError:
            return False


def parse_error(payload: bytes) -> DeviceErrorReply:
    """Decode an ERROR payload (code u8, request type u8, detail u16)."""
    if len(payload) < 4:
        raise ProtocolError(f"ERROR payload has {len(payload)} bytes, needs 4")
    code, request, detail = struct.unpack_from("<BBH", payload)
    return DeviceErrorReply(code=code, request=request, detail=detail)
