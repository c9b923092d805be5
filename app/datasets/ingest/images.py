"""Decide whether a file is a usable image, and decode images the same way everywhere.

Only JPEG, PNG and WebP are accepted; the format comes from the content, never the extension.
The pixel limit is checked on the header before any pixel is decoded. Pillow's own
decompression-bomb guard is a global setting, so it is left alone and only caught as a backup.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from .errors import InvalidContent
from .orientation import TRANSPOSE, oriented_size

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP")
FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
SUPPORTED_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp"})
OTHER_IMAGE_SUFFIXES = {
    ".gif": "GIF",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".heic": "HEIF",
    ".heif": "HEIF",
    ".avif": "AVIF",
    ".jp2": "JPEG 2000",
    ".ico": "ICO",
    ".psd": "PSD",
    ".svg": "SVG",
}
SNIFF_BYTES = 16
_IDENTIFIABLE = frozenset({"BMP", "GIF", "TIFF", "ICO", "PSD", "JPEG2000", "DDS", "QOI"})


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int  # as displayed, after EXIF orientation
    height: int
    raw_width: int  # as stored in the file
    raw_height: int
    orientation: int  # EXIF orientation 1..8 (1 when absent or invalid)


def sniff_format(head: bytes) -> str | None:
    """Name the image format from the first bytes; only formats with an unambiguous signature."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"):
            return "HEIF"
    return None


def image_suffix_format(name: str) -> str | None:
    """The format a file name claims, for files that are meant as images."""
    suffix = os.path.splitext(name)[1].lower()
    if suffix in SUPPORTED_SUFFIXES:
        return "JPEG" if suffix not in (".png", ".webp") else suffix[1:].upper()
    return OTHER_IMAGE_SUFFIXES.get(suffix)


def _open(fp: BinaryIO | Path, source: str, max_pixels: int) -> Image.Image:
    try:
        img = Image.open(fp, formats=SUPPORTED_FORMATS)
    # The warning only arrives as an exception where the host's warning filters say so.
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(source, max_pixels, exc) from exc
    except UnidentifiedImageError as exc:
        raise _unsupported(fp, source) from exc
    except Exception as exc:
        raise InvalidContent(f"{source} is not a valid image ({exc})", source=source) from exc
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise InvalidContent(
            f"{source}: decompression bomb: {width}x{height} px exceeds the limit of {max_pixels} px",
            source=source,
        )
    if width <= 0 or height <= 0:
        img.close()
        raise InvalidContent(f"{source} is not a valid image (it has no pixels)", source=source)
    return img


def _bomb(source: str, max_pixels: int, exc: Exception) -> InvalidContent:
    # Pillow refuses before we can read the size; its message carries the pixel count.
    return InvalidContent(
        f"{source}: decompression bomb: the image exceeds the limit of {max_pixels} px ({exc})",
        source=source,
    )


def _identify(fp: BinaryIO | Path) -> str | None:
    """Name a format Pillow knows but we do not accept; only formats with a real signature,
    since Pillow's looser plugins would "recognise" arbitrary bytes."""
    try:
        if not isinstance(fp, Path):
            fp.seek(0)
        with Image.open(fp) as img:
            fmt = img.format
    except Exception:
        return None
    return {"JPEG2000": "JPEG 2000"}.get(fmt or "", fmt) if fmt in _IDENTIFIABLE else None


def _unsupported(fp: BinaryIO | Path, source: str) -> InvalidContent:
    if isinstance(fp, Path):
        with fp.open("rb") as f:
            head = f.read(SNIFF_BYTES)
    else:
        fp.seek(0)
        head = fp.read(SNIFF_BYTES)
    fmt = sniff_format(head) or _identify(fp) or image_suffix_format(source)
    if fmt and fmt not in SUPPORTED_FORMATS:
        return InvalidContent(
            f"{source} is a {fmt} image; only JPEG, PNG and WebP are supported", source=source
        )
    return InvalidContent(f"{source} is not a JPEG, PNG or WebP image (it does not decode)", source=source)


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        # A broken EXIF block does not make the pixels unusable; show the image as stored.
        return 1
    return value if isinstance(value, int) and value in range(1, 9) else 1


def probe_image(path: Path, *, max_pixels: int, source: str) -> ImageInfo:
    """Check that the file decodes and return its format and oriented size."""
    img = _open(path, source, max_pixels)
    with img:
        fmt = img.format or ""
        raw_width, raw_height = img.size
        try:
            if fmt == "JPEG":
                # A 1/8-scale decode still walks the whole entropy-coded stream, so truncation
                # and corruption surface, at a fraction of the cost.
                img.draft("RGB", (max(1, raw_width // 8), max(1, raw_height // 8)))
            img.load()
        except Image.DecompressionBombError as exc:
            raise _bomb(source, max_pixels, exc) from exc
        except Exception as exc:
            raise InvalidContent(f"{source} is a damaged {fmt} image ({exc})", source=source) from exc
        # PNG may carry EXIF after the pixel data, so this must follow `load()`.
        orientation = _orientation(img)
    width, height = oriented_size(raw_width, raw_height, orientation)
    return ImageInfo(fmt, width, height, raw_width, raw_height, orientation)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode.startswith("I"):
        # 16-bit grayscale: Pillow's own conversion clips at 255 instead of scaling.
        pixels = np.clip(np.asarray(img, dtype=np.int64), 0, 65535) >> 8
        return Image.fromarray(pixels.astype(np.uint8)).convert("RGB")
    if img.mode in ("P", "PA", "LA", "La", "RGBa"):
        # Via RGBA so palette transparency is honoured before the alpha channel is dropped.
        img = img.convert("RGBA")
    return img.convert("RGB")


def load_rgb(data: bytes | BinaryIO, *, max_pixels: int = 64_000_000) -> Image.Image:
    """Decode an image for use: EXIF orientation applied, alpha dropped, grayscale as RGB."""
    fp: BinaryIO = io.BytesIO(data) if isinstance(data, bytes | bytearray | memoryview) else data
    source = getattr(fp, "name", None) or "image"
    img = _open(fp, str(source), max_pixels)
    with img:
        try:
            img.load()
            orientation = _orientation(img)
            rgb = _to_rgb(img)
        except Image.DecompressionBombError as exc:
            raise _bomb(str(source), max_pixels, exc) from exc
        except Exception as exc:
            raise InvalidContent(f"{source} is a damaged image ({exc})", source=str(source)) from exc
    if orientation in TRANSPOSE:
        rgb = rgb.transpose(TRANSPOSE[orientation])
    return rgb
