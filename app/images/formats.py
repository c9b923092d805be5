"""Which image format a file is: from its content, never from its extension alone.

Only JPEG, PNG and WebP are accepted. The other names exist so that a refusal can say what a file
is ("a.jpg is a BMP image") instead of only that it does not decode.
"""

from __future__ import annotations

import os

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
