#!/usr/bin/env python3
"""Pad an RP2040 second-stage boot image to 252 bytes and append its CRC-32.

The boot ROM runs the first 256 bytes of flash only if bytes 252..255 hold
the CRC-32 of bytes 0..251 (polynomial 0x04C11DB7, initial value
0xFFFFFFFF, no reflection, no final XOR), stored little-endian.

    python3 tools/boot2_checksum.py boot2.bin     (rewrites the file, 256 bytes)
"""

import sys

BOOT2_CODE = 252


def crc32_mpeg2(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def main(path: str) -> None:
    with open(path, "rb") as f:
        code = f.read()[:256]
    body = code[:BOOT2_CODE]
    if len(code) > BOOT2_CODE and any(code[BOOT2_CODE:]):
        sys.exit(f"{path}: boot stage longer than {BOOT2_CODE} bytes")
    body = body.ljust(BOOT2_CODE, b"\0")
    with open(path, "wb") as f:
        f.write(body + crc32_mpeg2(body).to_bytes(4, "little"))


if __name__ == "__main__":
    main(sys.argv[1])
