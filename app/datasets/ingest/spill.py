"""Normalised annotations kept on disk until they are inserted, so an upload's memory does not grow with them.

An annotated upload's images each carry their annotations to the caller (`StagedImage.annotations`); held as
Python objects, 433k polygons are about a gigabyte. The pipeline writes each image's list as one JSON line to a
file in the staging folder and hands out a `SpilledAnnotations`, which reads its line back when iterated.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from .models import ParsedAnnotation


class AnnotationSpill:
    def __init__(self, path: Path) -> None:
        self.path = path

    def add(self, annotations: list[ParsedAnnotation]) -> Sequence[ParsedAnnotation]:
        if not annotations:
            return []
        rows = [[a.category, list(a.bbox), a.segmentation, a.area, a.iscrowd] for a in annotations]
        with self.path.open("ab") as out:
            offset = out.tell()
            out.write(json.dumps(rows, separators=(",", ":")).encode() + b"\n")
        return SpilledAnnotations(self.path, offset, len(annotations))


class SpilledAnnotations(Sequence[ParsedAnnotation]):
    """One image's annotations, read from the spill file each time they are used (once, by the insert)."""

    def __init__(self, path: Path, offset: int, count: int) -> None:
        self._path, self._offset, self._count = path, offset, count

    def _load(self) -> list[ParsedAnnotation]:
        with self._path.open("rb") as f:
            f.seek(self._offset)
            rows: list[list[Any]] = json.loads(f.readline())
        return [
            ParsedAnnotation(category=c, bbox=(b[0], b[1], b[2], b[3]), segmentation=s, area=a, iscrowd=i)
            for c, b, s, a, i in rows
        ]

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> ParsedAnnotation: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[ParsedAnnotation]: ...
    def __getitem__(self, index: int | slice) -> ParsedAnnotation | Sequence[ParsedAnnotation]:
        return self._load()[index]

    def __iter__(self) -> Iterator[ParsedAnnotation]:
        return iter(self._load())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(list(self))
