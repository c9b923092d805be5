"""Entries are streamed to disk in chunks: Python-level memory does not grow with file size."""

from __future__ import annotations

import hashlib
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.datasets.ingest import IngestLimits, ingest_zip


@pytest.fixture(scope="module")
def big_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # ~40 MB of noise: incompressible, so a stored or deflated entry is as big as the image.
    pixels = np.random.default_rng(0).integers(0, 256, size=(3650, 3650, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("big") / "big.png"
    Image.fromarray(pixels).save(path, "PNG", compress_level=0)
    return path


@pytest.mark.parametrize(
    "compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"]
)
def test_large_entry_is_streamed(big_png: Path, tmp_path: Path, compression: int) -> None:
    zip_path = tmp_path / "big.zip"
    with zipfile.ZipFile(zip_path, "w", compression, compresslevel=1) as zf:
        zf.write(big_png, "photos/big.png")
    staging = tmp_path / "staging"
    staging.mkdir()
    size = big_png.stat().st_size
    assert size > 35 * 2**20

    tracemalloc.start()
    try:
        with zip_path.open("rb") as f:
            upload = ingest_zip(f, staging, IngestLimits())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    (img,) = upload.images
    assert (img.width, img.height, img.format) == (3650, 3650, "PNG")
    assert img.staged_path.stat().st_size == size
    assert img.sha256 == hashlib.sha256(big_png.read_bytes()).hexdigest()
    # A few 1 MiB chunks in flight at most; a whole-file read would be ~40 MB.
    assert peak < 8 * 2**20, f"peak Python memory {peak / 2**20:.1f} MiB"
