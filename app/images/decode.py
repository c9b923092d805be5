"""Decode images the same way everywhere: safely, upright, as RGB.

The format comes from the content, never the extension. The pixel limit is checked on the header
before any pixel is decoded. Pillow's own decompression-bomb guard is a global setting, so it is
left alone and only caught as a backup.

Three entry points, one per need: `probe_image` validates an upload without keeping its pixels,
`load_rgb` decodes for use (predict, previews), `load_rgb_for_resize` decodes for a resize to a
known size and lets libjpeg skip the detail the resize would throw away.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from .errors import InvalidImage
from .formats import SNIFF_BYTES, SUPPORTED_FORMATS, image_suffix_format, sniff_format
from .orientation import SWAPS_AXES, TRANSPOSE, orient_points, oriented_size

DEFAULT_MAX_PIXELS = 64_000_000

# Keys under which `load_rgb_for_resize` records, on the returned image's `info`, which
# full-resolution frame the (possibly draft-reduced) pixels stand for, so that a resize can lay them
# out exactly as it would the full-resolution image (see `app.versions.transforms.resize`).
SOURCE_SIZE_KEY = "samtune.source_size"  # (width, height) of the full-resolution image
SOURCE_BOX_KEY = "samtune.source_box"  # (x0, y0, x1, y1): that image's extent in the decoded pixels

_IDENTIFIABLE = frozenset({"BMP", "GIF", "TIFF", "ICO", "PSD", "JPEG2000", "DDS", "QOI"})


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int  # as displayed, after EXIF orientation
    height: int
    raw_width: int  # as stored in the file
    raw_height: int
    orientation: int  # EXIF orientation 1..8 (1 when absent or invalid)


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
            raise InvalidImage(f"{source} is a damaged {fmt} image ({exc})", source=source) from exc
        # PNG may carry EXIF after the pixel data, so this must follow `load()`.
        orientation = _orientation(img)
    width, height = oriented_size(raw_width, raw_height, orientation)
    return ImageInfo(fmt, width, height, raw_width, raw_height, orientation)


def image_size(data: bytes, *, max_pixels: int, source: str = "image") -> tuple[int, int]:
    """(width, height) as stored, read from the header alone: no pixel is decoded, so a request can be
    refused for its size (over `max_pixels`, or a caller's own limit) before it costs a decode."""
    with _open(io.BytesIO(data), source, max_pixels) as img:
        return img.size


def load_rgb(data: bytes | BinaryIO, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
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
            raise InvalidImage(f"{source} is a damaged image ({exc})", source=str(source)) from exc
    if orientation in TRANSPOSE:
        rgb = rgb.transpose(TRANSPOSE[orientation])
    return rgb


def load_rgb_for_resize(
    data: bytes, target: tuple[int, int], *, auto_orient: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[Image.Image, int]:
    """Decode to RGB, letting libjpeg decode JPEGs at 1/2, 1/4 or 1/8 scale where the result stays at
    least `target` (width, height of the output) on both axes.

    Returns the image and its EXIF orientation (1..8). With `auto_orient` the orientation is applied
    to the pixels; without it the pixels are returned as stored. The returned image's `info` says which
    full-resolution frame it stands for (`SOURCE_SIZE_KEY`, `SOURCE_BOX_KEY`)."""
    target_w, target_h = max(1, int(target[0])), max(1, int(target[1]))
    img = _open(io.BytesIO(data), "image", max_pixels)
    with img:
        raw_size = img.size
        try:
            box = (0.0, 0.0, float(raw_size[0]), float(raw_size[1]))
            if img.format == "JPEG":
                # The EXIF block of a JPEG precedes the pixels, so the orientation is known already.
                orientation = _orientation(img)
                swap = auto_orient and orientation in SWAPS_AXES
                wanted = (target_h, target_w) if swap else (target_w, target_h)
                drafted = img.draft("RGB", wanted)
                if drafted is not None:
                    box = tuple(float(v) for v in drafted[1])  # type: ignore[assignment]
            img.load()
            decoded_w, decoded_h = img.size
            # PNG may carry EXIF after the pixel data, so read (again) after `load()`.
            orientation = _orientation(img)
            rgb = _to_rgb(img)
        except Image.DecompressionBombError as exc:
            raise InvalidImage(f"image: decompression bomb ({exc})", source="image") from exc
        except InvalidImage:
            raise
        except Exception as exc:
            raise InvalidImage(f"image is a damaged image ({exc})", source="image") from exc
    full_size = raw_size
    if auto_orient and orientation in TRANSPOSE:
        rgb = rgb.transpose(TRANSPOSE[orientation])
        full_size = oriented_size(raw_size[0], raw_size[1], orientation)
        # The decoded extent of the full image moves with the pixels (a draft decode can carry a
        # partial last row/column, which a rotation puts on the left or top).
        corners = np.array([[box[0], box[1]], [box[2], box[3]]], dtype=np.float64)
        moved = orient_points(corners, orientation, decoded_w, decoded_h)
        box = (
            float(moved[:, 0].min()),
            float(moved[:, 1].min()),
            float(moved[:, 0].max()),
            float(moved[:, 1].max()),
        )
    rgb.info[SOURCE_SIZE_KEY] = (int(full_size[0]), int(full_size[1]))
    rgb.info[SOURCE_BOX_KEY] = box
    return rgb, orientation


def _open(fp: BinaryIO | Path, source: str, max_pixels: int) -> Image.Image:
    try:
        img = Image.open(fp, formats=SUPPORTED_FORMATS)
    # The warning only arrives as an exception where the host's warning filters say so.
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(source, max_pixels, exc) from exc
    except UnidentifiedImageError as exc:
        raise _unsupported(fp, source) from exc
    except Exception as exc:
        raise InvalidImage(f"{source} is not a valid image ({exc})", source=source) from exc
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise InvalidImage(
            f"{source}: decompression bomb: {width}x{height} px exceeds the limit of {max_pixels} px "
            "(SAMTUNE_MAX_IMAGE_PIXELS)",
            source=source,
        )
    if width <= 0 or height <= 0:
        img.close()
        raise InvalidImage(f"{source} is not a valid image (it has no pixels)", source=source)
    return img


def _bomb(source: str, max_pixels: int, exc: Exception) -> InvalidImage:
    # Pillow refuses before we can read the size; its message carries the pixel count.
    return InvalidImage(
        f"{source}: decompression bomb: the image exceeds the limit of {max_pixels} px "
        f"(SAMTUNE_MAX_IMAGE_PIXELS) ({exc})",
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


def _unsupported(fp: BinaryIO | Path, source: str) -> InvalidImage:
    if isinstance(fp, Path):
        with fp.open("rb") as f:
            head = f.read(SNIFF_BYTES)
    else:
        fp.seek(0)
        head = fp.read(SNIFF_BYTES)
    fmt = sniff_format(head) or _identify(fp) or image_suffix_format(source)
    if fmt and fmt not in SUPPORTED_FORMATS:
        return InvalidImage(
            f"{source} is a {fmt} image; only JPEG, PNG and WebP are supported", source=source
        )
    return InvalidImage(f"{source} is not a JPEG, PNG or WebP image (it does not decode)", source=source)


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        # A broken EXIF block does not make the pixels unusable; show the image as stored.
        return 1
    return value if isinstance(value, int) and value in range(1, 9) else 1


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode.startswith("I"):
        # 16-bit grayscale: Pillow's own conversion clips at 255 instead of scaling.
        pixels = np.clip(np.asarray(img, dtype=np.int64), 0, 65535) >> 8
        return Image.fromarray(pixels.astype(np.uint8)).convert("RGB")
    if img.mode in ("P", "PA", "LA", "La", "RGBa"):
        # Via RGBA so palette transparency is honoured before the alpha channel is dropped.
        img = img.convert("RGBA")
    return img.convert("RGB")
