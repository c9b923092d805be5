"""Decoding: EXIF orientation, modes to RGB, bombs and unsupported formats, the draft decode."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from app.images.decode import load_rgb, load_rgb_for_resize, probe_image
from app.images.errors import InvalidImage
from tests.factories import jpeg_of


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims `width` x `height` but carries no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# -------------------------------------------------------------------------------------------- load_rgb


def test_load_rgb_applies_exif_orientation():
    base = Image.fromarray(np.arange(40 * 30 * 3, dtype=np.uint8).reshape(30, 40, 3) % 251)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        buf = io.BytesIO()
        base.save(buf, "PNG", exif=exif.tobytes())
        expected = ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue())))
        got = load_rgb(io.BytesIO(buf.getvalue()))
        assert got.mode == "RGB"
        assert got.size == expected.size
        assert np.array_equal(np.asarray(got), np.asarray(expected.convert("RGB")))


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "1", "I;16"])
def test_load_rgb_modes(mode):
    if mode == "I;16":
        img = Image.fromarray(np.full((3, 4), 40000, dtype=np.uint16))
    else:
        img = Image.new(mode, (4, 3))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    out = load_rgb(buf.getvalue())
    assert out.mode == "RGB" and out.size == (4, 3)
    if mode == "I;16":
        assert np.asarray(out)[0, 0].tolist() == [40000 >> 8] * 3


def test_pil_bomb_warning_raised_as_error_is_reported_as_a_bomb():
    # Where the host turns Pillow's warning into an exception, it still reads as a bomb.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(InvalidImage, match="decompression bomb"):
            load_rgb(_png_header_only(12000, 8000), max_pixels=10**9)


def test_load_rgb_errors():
    with pytest.raises(InvalidImage) as caught:
        load_rgb(b"nope")
    assert caught.value.status_code == 422
    buf = io.BytesIO()
    Image.new("RGB", (4, 3)).save(buf, "GIF")
    with pytest.raises(InvalidImage, match="GIF"):
        load_rgb(buf.getvalue())
    with pytest.raises(InvalidImage, match="decompression bomb"):
        load_rgb(_png_header_only(30000, 30000))
    with pytest.raises(InvalidImage, match="decompression bomb"):
        load_rgb(_png_header_only(100, 100), max_pixels=50)


# ----------------------------------------------------------------------------------------- probe_image


def test_probe_image_reports_the_oriented_size_and_names_the_culprit(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(jpeg_of(np.zeros((30, 40, 3), dtype=np.uint8), orientation=6))
    info = probe_image(path, max_pixels=10_000, source="zip/a.jpg")
    assert (info.format, info.width, info.height) == ("JPEG", 30, 40)
    assert (info.raw_width, info.raw_height, info.orientation) == (40, 30, 6)
    with pytest.raises(InvalidImage, match="40x30 px exceeds the limit of 1000 px") as caught:
        probe_image(path, max_pixels=1000, source="zip/a.jpg")
    assert caught.value.source == "zip/a.jpg"


# --------------------------------------------------------------------------------- load_rgb_for_resize


def test_load_rgb_for_resize_uses_draft_on_big_jpegs() -> None:
    pixels = np.zeros((3000, 4000, 3), dtype=np.uint8)
    pixels[:, 2000:] = 200
    img, orientation = load_rgb_for_resize(jpeg_of(pixels), (1008, 1008))
    assert orientation == 1
    assert img.mode == "RGB"
    assert img.width >= 1008 and img.height >= 1008
    assert img.width < 4000


def test_load_rgb_for_resize_png_with_alpha_and_grayscale_become_rgb() -> None:
    rgba = np.zeros((50, 60, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 100
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    img, orientation = load_rgb_for_resize(buf.getvalue(), (1008, 1008))
    assert (img.mode, img.size, orientation) == ("RGB", (60, 50), 1)
    assert np.asarray(img)[0, 0, 0] == 200
    buf = io.BytesIO()
    Image.fromarray(np.full((20, 30), 77, dtype=np.uint8), "L").save(buf, "PNG")
    img, _ = load_rgb_for_resize(buf.getvalue(), (1008, 1008))
    assert img.mode == "RGB" and img.size == (30, 20)


def test_load_rgb_for_resize_exif_orientation() -> None:
    pixels = np.zeros((1200, 3000, 3), dtype=np.uint8)  # stored 3000 wide, 1200 high
    data = jpeg_of(pixels, orientation=6)
    img, orientation = load_rgb_for_resize(data, (512, 1008), auto_orient=True)
    assert orientation == 6
    assert img.height > img.width  # displayed upright: 1200 wide, 3000 high, maybe at reduced scale
    assert img.width >= 512 and img.height >= 1008
    assert img.width < 1200  # the swap was accounted for, so the draft still applied
    raw, orientation = load_rgb_for_resize(data, (512, 1008), auto_orient=False)
    assert orientation == 6
    assert raw.width > raw.height
    assert raw.width >= 512 and raw.height >= 1008


def test_load_rgb_for_resize_refuses_what_is_not_an_image() -> None:
    with pytest.raises(InvalidImage):
        load_rgb_for_resize(b"definitely not an image", (1008, 1008))
    with pytest.raises(InvalidImage):
        load_rgb_for_resize(jpeg_of(np.zeros((100, 100, 3), dtype=np.uint8)), (1008, 1008), max_pixels=5000)
