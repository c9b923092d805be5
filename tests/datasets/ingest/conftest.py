"""Builders for the ingest tests: images, COCO files and zips made on the fly in tmp_path.

Exposed through the single `ingest_kit` fixture so the tests do not depend on import paths.
"""

from __future__ import annotations

import io
import itertools
import json
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from app.datasets.ingest import IngestError, IngestLimits, ParsedUpload, ingest_zip

FileContent = bytes | str | dict | list


class IngestKit:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self._seeds = itertools.count(1)
        self._runs = itertools.count(1)

    def image(
        self,
        size: tuple[int, int] = (40, 30),
        fmt: str = "JPEG",
        mode: str = "RGB",
        *,
        exif_orientation: int | None = None,
        seed: int | None = None,
    ) -> bytes:
        """A small noisy image; every call gives different bytes unless `seed` repeats."""
        rng = np.random.default_rng(next(self._seeds) if seed is None else seed)
        width, height = size
        channels = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}[mode]
        pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
        img = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
        buf = io.BytesIO()
        kwargs: dict[str, Any] = {}
        if exif_orientation is not None:
            exif = Image.Exif()
            exif[0x0112] = exif_orientation
            kwargs["exif"] = exif.tobytes()
        img.save(buf, fmt, **kwargs)
        return buf.getvalue()

    def zip(
        self,
        files: Mapping[str, FileContent],
        *,
        name: str | None = None,
        compression: int = zipfile.ZIP_DEFLATED,
    ) -> Path:
        path = self.tmp_path / (name or f"upload{next(self._runs)}.zip")
        with zipfile.ZipFile(path, "w", compression) as zf:
            for entry, content in files.items():
                if isinstance(content, dict | list):
                    content = json.dumps(content)
                zf.writestr(entry, content)
        return path

    @staticmethod
    def patch_entry(
        zip_path: Path,
        entry: str,
        *,
        file_size: int | None = None,
        compress_size: int | None = None,
        flag_bits: int | None = None,
    ) -> None:
        """Rewrite header fields of one entry in both its local header and the central directory,
        to craft archives whose headers lie."""
        data = bytearray(zip_path.read_bytes())
        with zipfile.ZipFile(zip_path) as zf:
            local = zf.getinfo(entry).header_offset
        central = data.index(b"PK\x01\x02")
        while data[central : central + 4] == b"PK\x01\x02":
            name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, central + 28)
            if data[central + 46 : central + 46 + name_len] == entry.encode():
                break
            central += 46 + name_len + extra_len + comment_len
        else:
            raise AssertionError(f"{entry} not in the central directory")
        # (local offset, central offset, format) per field
        fields = [
            (file_size, 22, 24, "<I"),
            (compress_size, 18, 20, "<I"),
            (flag_bits, 6, 8, "<H"),
        ]
        for value, local_off, central_off, fmt in fields:
            if value is not None:
                struct.pack_into(fmt, data, local + local_off, value)
                struct.pack_into(fmt, data, central + central_off, value)
        zip_path.write_bytes(bytes(data))

    @staticmethod
    def coco(
        images: list[tuple[Any, str, int, int]],
        annotations: list[dict[str, Any]] | None = None,
        categories: list[tuple[Any, str] | tuple[Any, str, str]] | None = None,
    ) -> dict[str, Any]:
        """COCO dict from (id, file_name, width, height) tuples and (id, name[, supercategory])."""
        cats = categories if categories is not None else [(1, "cat")]
        return {
            "info": {"description": "test"},
            "images": [{"id": i, "file_name": f, "width": w, "height": h} for i, f, w, h in images],
            "annotations": annotations or [],
            "categories": [
                {"id": c[0], "name": c[1], **({"supercategory": c[2]} if len(c) > 2 else {})} for c in cats
            ],
        }

    @staticmethod
    def ann(ann_id: Any, image_id: Any, category_id: Any = 1, **fields: Any) -> dict[str, Any]:
        return {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": 0, **fields}

    def ingest(
        self, zip_path: Path, limits: IngestLimits | None = None, *, subset: str | None = None
    ) -> ParsedUpload:
        staging = self.tmp_path / f"staging{next(self._runs)}"
        staging.mkdir()
        with zip_path.open("rb") as f:
            return ingest_zip(f, staging, limits or IngestLimits(), subset=subset)

    def error(
        self,
        zip_path: Path,
        status: int,
        *needles: str,
        limits: IngestLimits | None = None,
        subset: str | None = None,
    ) -> IngestError:
        """Ingest, expecting an IngestError with `status` whose detail names every needle."""
        with pytest.raises(IngestError) as caught:
            self.ingest(zip_path, limits, subset=subset)
        err = caught.value
        assert err.status_code == status, (err.status_code, err.detail)
        for needle in needles:
            assert needle in err.detail, (needle, err.detail)
        return err


@pytest.fixture
def ingest_kit(tmp_path: Path) -> IngestKit:
    return IngestKit(tmp_path)
