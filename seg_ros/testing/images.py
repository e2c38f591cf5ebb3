"""Hostile images for tests and benchmarks: made here, byte by byte, never downloaded."""
from __future__ import annotations

import struct
import zlib


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack('>I', len(payload)) + kind + payload
            + struct.pack('>I', zlib.crc32(kind + payload) & 0xFFFFFFFF))


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit grey PNG of ``width`` x ``height`` black pixels, a few tens of KB.

    Deflate shrinks the all-zero rows about a thousand times, so 20000 x 20000 takes ~50 KB on
    the wire but 1.2 GB once a decoder expands it to 8-bit colour: a decompression bomb.
    """
    row = b'\x00' + bytes((width + 7) // 8)  # filter type 0, then the packed pixels
    packer = zlib.compressobj(9)
    parts = [packer.compress(row) for _ in range(height)]
    parts.append(packer.flush())
    ihdr = struct.pack('>IIBBBBB', width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    return (b'\x89PNG\r\n\x1a\n' + _chunk(b'IHDR', ihdr) + _chunk(b'IDAT', b''.join(parts))
            + _chunk(b'IEND', b''))
