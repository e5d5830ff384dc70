#!/usr/bin/env python3
"""Wrap a flat binary into UF2, the format the RP2040's USB boot drive takes.

Each 512-byte UF2 block carries 256 bytes of the image, its flash address,
its index and the block count, framed by magic numbers, plus the RP2040's
family ID so the boot drive accepts it.

    python3 tools/uf2.py firmware.bin 0x10000000 firmware.uf2
"""

import struct
import sys

MAGIC_START0 = 0x0A324655
MAGIC_START1 = 0x9E5D5157
MAGIC_END = 0x0AB16F30
FLAG_FAMILY_ID = 0x00002000
RP2040_FAMILY = 0xE48BFF56
PAYLOAD = 256


def to_uf2(image: bytes, base: int, family: int = RP2040_FAMILY) -> bytes:
    chunks = [image[i:i + PAYLOAD] for i in range(0, len(image), PAYLOAD)] or [b""]
    blocks = []
    for index, chunk in enumerate(chunks):
        header = struct.pack("<8I", MAGIC_START0, MAGIC_START1, FLAG_FAMILY_ID,
                             base + index * PAYLOAD, PAYLOAD, index, len(chunks), family)
        data = chunk.ljust(PAYLOAD, b"\0").ljust(476, b"\0")
        blocks.append(header + data + struct.pack("<I", MAGIC_END))
    return b"".join(blocks)


def main(src: str, base: str, dst: str) -> None:
    with open(src, "rb") as f:
        image = f.read()
    with open(dst, "wb") as f:
        f.write(to_uf2(image, int(base, 0)))


if __name__ == "__main__":
    main(*sys.argv[1:4])
