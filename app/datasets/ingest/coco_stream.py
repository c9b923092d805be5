"""A COCO annotation file read one item at a time, with memory bounded whatever its size.

`parse_coco` (coco.py) builds the whole document: a 200 MB file with 433k polygons cost the API 3.2 GB (each
coordinate a Python float in a list, on top of the file's bytes). Here the file is streamed from the zip by
ijson's C parser, once per top-level array, and each item is validated by the same pydantic models as it comes:
images and categories are kept (they are small and needed to resolve every annotation), annotations are
written, validated, to a spill file in the staging folder with only their offsets kept per image, and read
back one image at a time when that image is staged.

Errors name the file and the JSON location as `parse_coco`'s do (`annotations[3].category_id: Field required`);
a syntax error names its line and column, found by a second, slower scan that only runs when the file is bad.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ijson
from pydantic import BaseModel, ValidationError

from .coco import (
    _MAX_REPORTED_ERRORS,
    CocoAnnotation,
    CocoCategory,
    CocoId,
    CocoImage,
    _location,
    _message,
    id_key,
)
from .errors import InvalidContent

Chunks = Callable[[], Iterable[bytes]]
_ARRAYS = ("images", "annotations", "categories")
_BOM = b"\xef\xbb\xbf"
_POSITION = re.compile(r" at (\d+)$")


class _Reader:
    """A file object over a stream of chunks (ijson reads with `read(n)`); drops a UTF-8 byte order mark.
    A read may return fewer bytes than asked (as a pipe's does); only b"" means the end."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = b""
        self._pos = 0
        self._first = True

    def _fill(self) -> bool:
        while self._pos >= len(self._buffer):
            chunk = next(self._chunks, None)
            if chunk is None:
                return False
            if self._first:
                chunk, self._first = chunk.removeprefix(_BOM), False
            self._buffer, self._pos = chunk, 0
        return True

    def read(self, n: int = -1) -> bytes:
        if not self._fill():
            return b""
        if n < 0:
            rest = [self._buffer[self._pos :], *self._chunks]
            self._buffer, self._pos = b"", 0
            return b"".join(rest)
        out = self._buffer[self._pos : self._pos + n]
        self._pos += len(out)
        return out


@dataclass
class _Problems:
    source: str
    shown: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, where: tuple[int | str, ...], exc: ValidationError) -> None:
        for error in exc.errors(include_url=False):
            self.count += 1
            if len(self.shown) < _MAX_REPORTED_ERRORS:
                self.shown.append(f"{_location(where + tuple(error['loc']))}: {_message(error['msg'])}")

    def add_text(self, text: str) -> None:
        self.count += 1
        if len(self.shown) < _MAX_REPORTED_ERRORS:
            self.shown.append(text)

    def raise_if_any(self) -> None:
        if not self.count:
            return
        shown = "; ".join(self.shown)
        if self.count > len(self.shown):
            shown += f" (and {self.count - len(self.shown)} more problems)"
        raise InvalidContent(f"{self.source} is not a COCO annotation file: {shown}", source=self.source)


@dataclass
class _Reference:
    """The first annotation (in file order) that names an image or a category: an unknown one is reported by
    it, as the whole-document check did."""

    index: int
    annotation_id: CocoId
    value: CocoId


@dataclass
class StreamedCoco:
    """What the pipeline needs of one annotation file: its images and categories (in file order), which
    categories annotations use, and each image's annotations read back on demand."""

    source: str
    spill: Path
    images: dict[str, CocoImage]
    categories: dict[str, CocoCategory]
    used_categories: set[str]
    offsets: dict[str, list[int]]

    def annotations_for(self, image_key: str) -> list[CocoAnnotation]:
        found = self.offsets.get(image_key)
        if not found:
            return []
        out = []
        with self.spill.open("rb") as f:
            for offset in found:
                f.seek(offset)
                out.append(CocoAnnotation.model_validate_json(f.readline()))
        return out


def _items(chunks: Chunks, prefix: str) -> Iterator[Any]:
    yield from ijson.items(_Reader(chunks()), prefix, use_float=True)


def _structure(chunks: Chunks, problems: _Problems) -> set[str]:
    """The top-level arrays present, with a problem recorded for a top level that is not an object or a key
    that is not an array. Stops as soon as all three are seen (usually early in the file)."""
    seen: set[str] = set()
    for prefix, event, _ in ijson.parse(_Reader(chunks())):
        if prefix == "" and event in ("start_array", "string", "number", "boolean", "null"):
            problems.add_text("top level: Input should be a valid dictionary")
            return seen
        if prefix in _ARRAYS and prefix not in seen and event != "map_key":
            seen.add(prefix)
            if event != "start_array":
                problems.add_text(f"{prefix}: Input should be a valid list")
            if len(seen) == len(_ARRAYS):
                break
    if "images" not in seen:
        problems.add_text("images: Field required")
    return seen


def _validate(model: type[BaseModel], value: Any, where: tuple[int | str, ...], problems: _Problems) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        problems.add(where, exc)
        return None


def stream_coco(chunks: Chunks, source: str, spill: Path) -> StreamedCoco:
    """Parse and cross-check one annotation file; `chunks()` gives its bytes from the start each time."""
    try:
        return _stream(chunks, source, spill)
    except ijson.JSONError as exc:
        raise InvalidContent(
            f"{source} is not valid JSON: {_syntax_error(chunks, exc)}", source=source
        ) from exc


def _stream(chunks: Chunks, source: str, spill: Path) -> StreamedCoco:
    problems = _Problems(source)
    present = _structure(chunks, problems)
    problems.raise_if_any()

    images: dict[str, CocoImage] = {}
    for i, value in enumerate(_items(chunks, "images.item")):
        image = _validate(CocoImage, value, ("images", i), problems)
        if image is None:
            continue
        key = id_key(image.id)
        if key in images:
            raise InvalidContent(f"{source}: image id {image.id!r} is used twice", source=source)
        images[key] = image
    categories: dict[str, CocoCategory] = {}
    if "categories" in present:
        for i, value in enumerate(_items(chunks, "categories.item")):
            category = _validate(CocoCategory, value, ("categories", i), problems)
            if category is None:
                continue
            key = id_key(category.id)
            if key in categories:
                raise InvalidContent(f"{source}: category id {category.id!r} is used twice", source=source)
            categories[key] = category

    offsets: dict[str, list[int]] = {}
    image_refs: dict[str, _Reference] = {}
    category_refs: dict[str, _Reference] = {}
    if "annotations" in present:
        with spill.open("wb") as out:
            for i, value in enumerate(_items(chunks, "annotations.item")):
                ann = _validate(CocoAnnotation, value, ("annotations", i), problems)
                if ann is None or problems.count:
                    continue  # keep reading for the other problems' locations; nothing is kept any more
                image_key, category_key = id_key(ann.image_id), id_key(ann.category_id)
                image_refs.setdefault(image_key, _Reference(i, ann.id, ann.image_id))
                category_refs.setdefault(category_key, _Reference(i, ann.id, ann.category_id))
                offsets.setdefault(image_key, []).append(out.tell())
                out.write(
                    json.dumps(value, separators=(",", ":")).encode() + b"\n"
                )  # validated again when read
    problems.raise_if_any()

    missing_image = min(
        (r for k, r in image_refs.items() if k not in images), key=lambda r: r.index, default=None
    )
    missing_category = min(
        (r for k, r in category_refs.items() if k not in categories), key=lambda r: r.index, default=None
    )
    # The first bad annotation in file order, whichever check it fails.
    if missing_image and (missing_category is None or missing_image.index <= missing_category.index):
        raise InvalidContent(
            f"{source}: annotation {missing_image.annotation_id!r} points at image_id {missing_image.value!r}, "
            "which is not in the file",
            source=source,
        )
    if missing_category:
        raise InvalidContent(
            f"{source}: annotation {missing_category.annotation_id!r} has category_id "
            f"{missing_category.value!r}, which is not in the file's categories",
            source=source,
        )
    return StreamedCoco(source, spill, images, categories, set(category_refs), offsets)


def _syntax_error(chunks: Chunks, exc: ijson.JSONError) -> str:
    """Where the syntax error is, as 'line L column C'. ijson's C parser says it only as a snippet; its pure
    Python parser says the character offset, so that one scans the file again (only a bad file pays)."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "incomplete JSON"
    try:
        for _ in ijson.get_backend("python").basic_parse(_Reader(chunks())):
            pass
    except ijson.JSONError as slow:
        match = _POSITION.search(str(slow))
        if match:
            line, column = _line_column(chunks, int(match.group(1)))
            return f"{str(slow)[: match.start()]} at line {line} column {column}"
        return str(slow) or first_line
    return first_line


def _line_column(chunks: Chunks, offset: int) -> tuple[int, int]:
    """1-based line and column of the character at `offset`, counted while decoding the file again."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    line, column, seen = 1, 1, 0
    reader = _Reader(chunks())
    while chunk := reader.read(2**20):
        text = decoder.decode(chunk)
        take = text[: offset - seen]
        newlines = take.count("\n")
        if newlines:
            line += newlines
            column = len(take) - take.rfind("\n")
        else:
            column += len(take)
        seen += len(take)
        if seen >= offset:
            break
    return line, column
