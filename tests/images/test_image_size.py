"""`image_size`: the size from the header alone, so a predict request over a pixel limit is refused before
anything is decoded."""

from __future__ import annotations

import struct
import zlib

import pytest

from app.images.decode import image_size
from app.images.errors import InvalidImage
from tests.factories import jpeg_bytes


def _png_header(width: int, height: int) -> bytes:
    """A PNG that is all header: its pixel data is empty, so decoding it would fail."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_the_size_comes_from_the_header() -> None:
    assert image_size(_png_header(10_000, 8_000), max_pixels=10**9) == (10_000, 8_000)
    assert image_size(jpeg_bytes(64, 48), max_pixels=10**6) == (64, 48)


def test_over_the_limit_is_refused_naming_the_setting() -> None:
    with pytest.raises(
        InvalidImage, match=r"10000x8000 px exceeds the limit of 64000000 px \(SAMTUNE_MAX_IMAGE_PIXELS\)"
    ):
        image_size(_png_header(10_000, 8_000), max_pixels=64_000_000)


def test_not_an_image_is_refused() -> None:
    with pytest.raises(InvalidImage):
        image_size(b"not an image", max_pixels=10**6)
