"""Images in an upload: formats, EXIF orientation, bombs, duplicates (decoding itself: tests/images/)."""

from __future__ import annotations

import struct
import zlib

import pytest

from app.datasets.ingest import IngestLimits
from app.images.decode import load_rgb


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims `width` x `height` but carries no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _single(k, image: bytes, name: str = "a.jpg", size=(40, 30), annotations=None, limits=None):
    doc = k.coco([(1, name, *size)], annotations)
    return k.ingest(k.zip({"train.json": doc, name: image}), limits)


def test_exif_rotated_jpeg_annotated_as_displayed(ingest_kit):
    k = ingest_kit
    image = k.image(size=(40, 30), exif_orientation=6)
    box = k.ann(1, 1, bbox=[1, 2, 10, 20], segmentation=[[1, 2, 11, 2, 11, 22, 1, 22]])
    upload = _single(k, image, size=(30, 40), annotations=[box])
    (img,) = upload.images
    assert (img.width, img.height) == (30, 40)
    assert img.annotations[0].bbox == (1.0, 2.0, 10.0, 20.0)
    assert img.staged_path.read_bytes() == image  # the exact bytes, EXIF untouched
    assert upload.warnings == []


def test_exif_rotated_jpeg_annotated_as_stored_is_rotated(ingest_kit):
    k = ingest_kit
    image = k.image(size=(40, 30), exif_orientation=6)
    # Drawn on the stored 40x30 pixels; orientation 6 turns them 90 degrees clockwise.
    ann = k.ann(1, 1, bbox=[0, 0, 10, 5], segmentation=[[0, 0, 10, 0, 10, 5, 0, 5]])
    upload = _single(k, image, size=(40, 30), annotations=[ann])
    (img,) = upload.images
    assert (img.width, img.height) == (30, 40)
    (out,) = img.annotations
    assert out.segmentation == [[30.0, 0.0, 30.0, 10.0, 25.0, 10.0, 25.0, 0.0]]
    assert out.bbox == (25.0, 0.0, 5.0, 10.0)
    assert any("EXIF-rotated" in w for w in upload.warnings)


def test_declared_size_mismatch_warns_and_uses_the_real_size(ingest_kit):
    k = ingest_kit
    upload = _single(
        k, k.image(size=(40, 30)), size=(80, 60), annotations=[k.ann(1, 1, bbox=[30, 20, 40, 30])]
    )
    (img,) = upload.images
    assert (img.width, img.height) == (40, 30)
    assert img.annotations[0].bbox == (30.0, 20.0, 10.0, 10.0)
    assert any("differs from the actual image" in w for w in upload.warnings)


def test_png_with_alpha_grayscale_and_webp(ingest_kit):
    k = ingest_kit
    files = {
        "rgba.png": k.image(fmt="PNG", mode="RGBA"),
        "gray.jpg": k.image(mode="L"),
        "gray_alpha.png": k.image(fmt="PNG", mode="LA"),
        "photo.webp": k.image(fmt="WEBP"),
    }
    doc = k.coco([(i, name, 40, 30) for i, name in enumerate(files)])
    upload = k.ingest(k.zip({"train.json": doc, **files}))
    assert [(i.source, i.format) for i in upload.images] == [
        ("rgba.png", "PNG"),
        ("gray.jpg", "JPEG"),
        ("gray_alpha.png", "PNG"),
        ("photo.webp", "WEBP"),
    ]
    for img in upload.images:
        rgb = load_rgb(img.staged_path.read_bytes())
        assert rgb.mode == "RGB" and rgb.size == (40, 30)


def test_duplicate_images_are_dropped_with_their_annotations(ingest_kit):
    k = ingest_kit
    image = k.image(seed=7)
    doc = k.coco(
        [(1, "a.jpg", 40, 30), (2, "copy.jpg", 40, 30), (3, "a.jpg", 40, 30)],
        [k.ann(1, 1, bbox=[0, 0, 5, 5]), k.ann(2, 2, bbox=[0, 0, 6, 6]), k.ann(3, 3, bbox=[0, 0, 7, 7])],
    )
    upload = k.ingest(k.zip({"train.json": doc, "a.jpg": image, "copy.jpg": image}))
    (img,) = upload.images
    assert img.source == "a.jpg"
    assert [a.bbox for a in img.annotations] == [(0.0, 0.0, 5.0, 5.0)]
    text = " ".join(upload.warnings)
    assert "2 duplicate images" in text and "copy.jpg = a.jpg" in text
    # The staged images only (annotation files and annotations are spilled beside them as .jsonl).
    assert len([p for p in img.staged_path.parent.iterdir() if p.suffix != ".jsonl"]) == 1


def test_extension_is_not_trusted(ingest_kit):
    k = ingest_kit
    upload = _single(k, k.image(fmt="PNG"), name="really_a_png.jpg")
    assert upload.images[0].format == "PNG"
    assert upload.images[0].staged_path.suffix == ".png"


def test_gif_referenced_by_annotations(ingest_kit):
    k = ingest_kit
    doc = k.coco([(1, "a.gif", 40, 30)])
    err = k.error(k.zip({"train.json": doc, "a.gif": k.image(fmt="GIF")}), 422, "a.gif", "GIF")
    assert err.source == "a.gif"


def test_bmp_disguised_as_jpeg_is_named(ingest_kit):
    k = ingest_kit
    doc = k.coco([(1, "a.jpg", 40, 30)])
    k.error(k.zip({"train.json": doc, "a.jpg": k.image(fmt="BMP")}), 422, "a.jpg is a BMP image")


def test_undecodable_image(ingest_kit):
    k = ingest_kit
    doc = k.coco([(1, "a.jpg", 40, 30)])
    k.error(
        k.zip({"train.json": doc, "a.jpg": b"definitely not pixels" * 10}), 422, "a.jpg", "does not decode"
    )


def test_truncated_jpeg(ingest_kit):
    k = ingest_kit
    image = k.image(size=(200, 150))
    doc = k.coco([(1, "a.jpg", 200, 150)])
    k.error(k.zip({"train.json": doc, "a.jpg": image[: len(image) // 2]}), 422, "a.jpg")


def test_decompression_bomb_header(ingest_kit):
    k = ingest_kit
    doc = k.coco([(1, "bomb.png", 30000, 30000)])
    path = k.zip({"train.json": doc, "bomb.png": _png_header_only(30000, 30000)})
    err = k.error(path, 422, "bomb.png", "decompression bomb")
    assert err.source == "bomb.png"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_limit_is_checked_on_the_header(ingest_kit):
    k = ingest_kit
    doc = k.coco([(1, "a.png", 12000, 8000)])
    path = k.zip({"train.json": doc, "a.png": _png_header_only(12000, 8000)})
    k.error(path, 422, "a.png", "decompression bomb: 12000x8000 px exceeds the limit of 64000000 px")
    small = k.zip({"train.json": k.coco([(1, "a.jpg", 40, 30)]), "a.jpg": k.image()})
    k.error(small, 422, "40x30 px", "limit of 1000 px", limits=IngestLimits(max_image_pixels=1000))
