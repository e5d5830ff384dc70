"""Write a seed corpus for fuzz_protocol: valid request streams and frame bodies.

Seeds let libFuzzer start from inputs that reach every command handler
instead of discovering COBS and the CRC by itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

from microfit.harness import protocol as P


def req(msg: int, seq: int, payload: bytes = b"") -> bytes:
    return P.encode_frame(P.Frame(msg, seq, payload))


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    streams = {
        "hello": b"\x00" + req(P.Msg.HELLO, 1),
        "infer": (req(P.Msg.LOAD_INPUT, 2, P.load_input_payload(0, bytes(range(64))))
                  + req(P.Msg.INVOKE, 3) + req(P.Msg.READ_OUTPUT, 4, P.read_output_payload(0, 10))
                  + req(P.Msg.READ_LAYERS, 5, P.read_layers_payload(0)) + req(P.Msg.RESET, 6)),
        "errors": (req(0x55, 7) + req(P.Msg.INVOKE, 8, b"\x01")
                   + req(P.Msg.READ_OUTPUT, 9, P.read_output_payload(8, 4))
                   + b"\x05\x01\x02\x00" + req(P.Msg.LOAD_INPUT, 10, bytes(100))),
    }
    for name, stream in streams.items():
        (out / f"stream_{name}").write_bytes(b"\x00" + stream)  # even first byte: a stream
    for name, body in {"zeros": bytes(12), "mixed": bytes([1, 0, 2, 0, 0, 3] * 10),
                       "long": bytes(range(1, 96))}.items():
        (out / f"cobs_{name}").write_bytes(b"\x01" + body)  # odd first byte: a COBS body


if __name__ == "__main__":
    main(Path(sys.argv[1]))
