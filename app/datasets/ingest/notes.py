"""Collect the warnings of one ingest, counting repeats instead of listing each one.

A dataset with ten thousand slightly-too-large boxes should produce one readable line, not ten
thousand, so events are tallied per (file, kind) and rendered once at the end with examples.
"""

from __future__ import annotations

_MAX_EXAMPLES = 3

# kind -> (singular, plural); {n} is the count.
MESSAGES: dict[str, tuple[str, str]] = {
    "box_clipped": ("1 box was clipped to the image", "{n} boxes were clipped to the image"),
    "polygon_clipped": (
        "1 polygon had points outside the image; they were clipped to it",
        "{n} polygons had points outside the image; they were clipped to it",
    ),
    "part_dropped": (
        "1 degenerate polygon part was dropped (fewer than 3 points, an odd number of coordinates "
        "or no area)",
        "{n} degenerate polygon parts were dropped (fewer than 3 points, an odd number of coordinates "
        "or no area)",
    ),
    "box_only": (
        "1 annotation was kept as a box only because its mask was degenerate or empty",
        "{n} annotations were kept as boxes only because their masks were degenerate or empty",
    ),
    "box_from_mask": (
        "1 annotation had an empty or out-of-image box; the mask's extent was used instead",
        "{n} annotations had empty or out-of-image boxes; the masks' extents were used instead",
    ),
    "ann_dropped": (
        "1 annotation was dropped because it has no valid box or mask",
        "{n} annotations were dropped because they have no valid box or mask",
    ),
    "exif_rotated": (
        "1 image is EXIF-rotated but was annotated as stored; its annotations were rotated to match",
        "{n} images are EXIF-rotated but were annotated as stored; their annotations were rotated to match",
    ),
    "size_mismatch": (
        "1 image's width/height in the file differs from the actual image; the actual size was used",
        "{n} images' width/height in the file differ from the actual images; the actual sizes were used",
    ),
    "duplicate": (
        "1 duplicate image (same bytes as an earlier one) was dropped with its annotations",
        "{n} duplicate images (same bytes as earlier ones) were dropped with their annotations",
    ),
    "unreferenced_image": (
        "1 image file is not referenced by any annotation file and was skipped",
        "{n} image files are not referenced by any annotation file and were skipped",
    ),
    "not_an_image": (
        "1 file that is not an image was skipped",
        "{n} files that are not images were skipped",
    ),
    "unused_json": (
        "1 JSON file is not part of the dataset layout and was ignored",
        "{n} JSON files are not part of the dataset layout and were ignored",
    ),
    "outside_subset": (
        "1 file outside the chosen subset was ignored",
        "{n} files outside the chosen subset were ignored",
    ),
}


class Notes:
    def __init__(self) -> None:
        self._lines: list[str] = []
        self._counts: dict[tuple[str, str], int] = {}
        self._examples: dict[tuple[str, str], list[str]] = {}

    def add(self, message: str) -> None:
        self._lines.append(message)

    def count(self, kind: str, source: str = "", *, n: int = 1, example: str | None = None) -> None:
        if kind not in MESSAGES:
            raise KeyError(kind)
        key = (source, kind)
        self._counts[key] = self._counts.get(key, 0) + n
        examples = self._examples.setdefault(key, [])
        if example is not None and len(examples) < _MAX_EXAMPLES:
            examples.append(example)

    def render(self) -> list[str]:
        lines = list(self._lines)
        for (source, kind), n in self._counts.items():
            one, many = MESSAGES[kind]
            text = one if n == 1 else many.format(n=n)
            examples = self._examples[(source, kind)]
            if examples:
                text += f" (e.g. {', '.join(examples)}{', ...' if n > len(examples) else ''})"
            lines.append(f"{source}: {text}" if source else text[0].upper() + text[1:])
        return lines
