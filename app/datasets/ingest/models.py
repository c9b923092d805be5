"""The data types the ingest package hands to its callers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPLITS: tuple[str, ...] = ("train", "valid", "test")


@dataclass(frozen=True)
class IngestLimits:
    max_entries: int = 100_000
    # Counted on bytes actually decompressed, not on what the headers claim.
    max_uncompressed_bytes: int = 20 * 2**30
    # Only enforced for entries over 1 MiB: tiny files legitimately compress extremely well.
    max_ratio: float = 200.0
    # width*height from the image header; anything larger is treated as a decompression bomb.
    max_image_pixels: int = 64_000_000
    max_json_bytes: int = 512 * 2**20
    # Classes one upload may bring (a dataset is held to the same number by the service).
    max_classes: int = 2000


# Class and dataset names, in characters: the database columns' size, checked before anything is written.
MAX_NAME_CHARS = 200


@dataclass
class ParsedAnnotation:
    category: str
    bbox: tuple[float, float, float, float]
    segmentation: list[list[float]] | dict[str, Any] | None
    area: float
    iscrowd: bool


@dataclass
class StagedImage:
    source: str
    staged_path: Path
    sha256: str
    width: int
    height: int
    format: str
    split: str
    # A list, or (from a zip's annotation files) a SpilledAnnotations read from the staging folder when used.
    annotations: Sequence[ParsedAnnotation] = field(default_factory=list)


@dataclass
class ParsedUpload:
    layout: str
    images: list[StagedImage]
    categories: list[str]
    warnings: list[str]
