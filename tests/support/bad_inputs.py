"""Hostile frames for the bad-input and fuzz tests: tiny files whose header lies about their size."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from common.codecs import encode_image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG (valid CRCs) whose IHDR claims width x height RGB pixels, with 64 bytes of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 8x8 baseline JPEG whose SOF0 marker is rewritten to claim width x height (each < 65536)."""
    data = bytearray(encode_image(np.zeros((8, 8, 3), np.uint8)))
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), then height and width
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)
