"""`ingest_zip`: from an uploaded zip to staged images and normalised annotations.

Order matters for failing fast and cheaply: the archive is checked first, then every
annotation file is parsed and cross-checked, and only then are images copied and decoded.
Nothing is returned until everything has been validated, so callers can write all or nothing.
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from app.images.decode import ImageInfo, probe_image
from app.images.errors import InvalidImage
from app.images.formats import (
    FORMAT_SUFFIX,
    SNIFF_BYTES,
    SUPPORTED_FORMATS,
    image_suffix_format,
    sniff_format,
)

from .annotations import build_annotation, choose_frame
from .coco import CocoImage, id_key
from .coco_stream import StreamedCoco, stream_coco
from .errors import ArchiveTooLarge, InvalidContent
from .layout import AnnotationFile, EntryResolver, Layout, detect_layout, split_from_folders
from .models import IngestLimits, ParsedAnnotation, ParsedUpload, StagedImage
from .notes import Notes
from .safezip import SafeZip, ZipEntry, human_bytes
from .spill import AnnotationSpill


def ingest_zip(
    fileobj: BinaryIO, staging_dir: Path, limits: IngestLimits, *, subset: str | None = None
) -> ParsedUpload:
    """Validate the whole upload and stage its images under `staging_dir` (which must exist and
    be empty; the caller removes it). Raises `IngestError` on anything that cannot be used."""
    with SafeZip(fileobj, limits) as archive:
        return _Ingest(archive, Path(staging_dir), limits).run(subset)


@dataclass
class _ParsedFile:
    file: AnnotationFile
    coco: StreamedCoco


@dataclass
class _PlannedImage:
    file: AnnotationFile
    record: CocoImage
    entry: ZipEntry
    coco: StreamedCoco  # the image's annotations are read from it when the image is staged


class _Ingest:
    def __init__(self, archive: SafeZip, staging_dir: Path, limits: IngestLimits) -> None:
        self.archive = archive
        self.staging_dir = staging_dir
        self.limits = limits
        self.notes = Notes()
        self.images: list[StagedImage] = []
        self._first_by_sha: dict[str, str] = {}
        self._staged_entries: set[str] = set()
        self._spill = AnnotationSpill(self.staging_dir / "annotations.jsonl")

    def run(self, subset: str | None) -> ParsedUpload:
        layout = detect_layout([e.name for e in self.archive.entries], subset)
        scoped = [e for e in self.archive.entries if e.name.startswith(layout.scope)]
        outside = len(self.archive.entries) - len(scoped)
        if outside:
            self.notes.add(
                f"{outside} file{'s' if outside != 1 else ''} outside subset {layout.subset!r} "
                f"{'were' if outside != 1 else 'was'} ignored"
            )
        if layout.kind == "images_only":
            categories: list[str] = []
            self._images_only(scoped)
        else:
            categories = self._annotated(layout, scoped)
        if not self.images:
            raise InvalidContent("the upload contains no images (JPEG, PNG or WebP)")
        return ParsedUpload(layout.kind, self.images, categories, self.notes.render())

    # --- annotated layouts -------------------------------------------------------------------

    def _annotated(self, layout: Layout, scoped: list[ZipEntry]) -> list[str]:
        by_name = {e.name: e for e in scoped}
        parsed = []
        for n, file in enumerate(layout.annotation_files):
            entry = by_name[file.entry]
            if entry.declared_size > self.limits.max_json_bytes:
                raise ArchiveTooLarge(
                    f"{entry.name} is {human_bytes(entry.declared_size)}, more than the limit of "
                    f"{human_bytes(self.limits.max_json_bytes)}",
                    source=entry.name,
                )
            # Streamed from the zip (once per top-level array), never held whole: see coco_stream.py.
            spill = self.staging_dir / f"coco-{n}.jsonl"
            chunks = functools.partial(self.archive.iter_chunks, entry)
            parsed.append(_ParsedFile(file, stream_coco(chunks, entry.name, spill)))
        plans = self._plan(parsed, by_name)
        self._note_skipped(layout, scoped, {p.entry.name for p in plans})
        categories = self._categories(parsed)
        if len(categories) > self.limits.max_classes:
            raise InvalidContent(
                f"the upload's annotation files name {len(categories)} classes, more than the limit of "
                f"{self.limits.max_classes} (SAMTUNE_MAX_CLASSES)",
                source=layout.annotation_files[0].entry,
            )
        for plan in plans:
            self._stage_annotated(plan)
        return categories

    def _plan(self, parsed: list[_ParsedFile], by_name: dict[str, ZipEntry]) -> list[_PlannedImage]:
        """Resolve every referenced image before reading any, so a missing file fails fast."""
        resolver = EntryResolver(n for n in by_name if not n.lower().endswith(".json"))
        plans = []
        for item in parsed:
            source = item.file.entry
            json_dir = posixpath.dirname(source)
            for record in item.coco.images.values():
                found = resolver.resolve(record.file_name, json_dir, source)
                if found is None:
                    raise InvalidContent(
                        f"{source}: image {record.id!r} has file_name {record.file_name!r}, "
                        "which is not in the zip",
                        source=source,
                    )
                plans.append(_PlannedImage(item.file, record, by_name[found], item.coco))
        return plans

    def _note_skipped(self, layout: Layout, scoped: list[ZipEntry], referenced: set[str]) -> None:
        annotation_files = {f.entry for f in layout.annotation_files}
        unused_json = set(layout.unused_json)
        for entry in scoped:
            if entry.name in referenced or entry.name in annotation_files:
                continue
            if entry.name in unused_json:
                self.notes.count("unused_json", example=entry.name)
            elif image_suffix_format(entry.name):
                self.notes.count("unreferenced_image", example=entry.name)
            else:
                self.notes.count("not_an_image", example=entry.name)

    def _categories(self, parsed: list[_ParsedFile]) -> list[str]:
        """Class names in first-seen order, without exporters' placeholder category.

        Roboflow adds a category named after the dataset that no annotation uses and that is the
        supercategory of all the real ones; that combination marks a placeholder. An unused
        category without children is still a class: it may simply have no examples yet."""
        names: dict[str, None] = {}
        parents: set[str] = set()
        used: set[str] = set()
        for item in parsed:
            for category in item.coco.categories.values():
                names.setdefault(category.name)
                parent = (category.supercategory or "").strip()
                if parent and parent != category.name:
                    parents.add(parent)
            used.update(item.coco.categories[key].name for key in item.coco.used_categories)
        placeholders = [n for n in names if n not in used and n in parents]
        for name in placeholders:
            self.notes.add(
                f"category {name!r} is used by no annotation and is the parent of other categories; "
                "it was taken as the export's placeholder, not as a class"
            )
        return [n for n in names if n not in placeholders]

    def _stage_annotated(self, plan: _PlannedImage) -> None:
        staged = self._stage(plan.entry)
        if staged is None:
            return
        path, sha, info = staged
        source = plan.file.entry
        frame = choose_frame(plan.record, info, self.notes, source)
        annotations = []
        for ann in plan.coco.annotations_for(id_key(plan.record.id)):
            category = plan.coco.categories[id_key(ann.category_id)].name
            parsed = build_annotation(ann, category, frame, self.notes, source)
            if parsed is not None:
                annotations.append(parsed)
        self._add(plan.entry, path, sha, info, plan.file.split, self._spill.add(annotations))

    # --- images only -------------------------------------------------------------------------

    def _images_only(self, scoped: list[ZipEntry]) -> None:
        for entry in scoped:
            fmt = self._sniff(entry)
            if fmt is None:
                self.notes.count("not_an_image", example=entry.name)
                continue
            if fmt not in SUPPORTED_FORMATS:
                raise InvalidContent(
                    f"{entry.name} is a {fmt} image; only JPEG, PNG and WebP are supported",
                    source=entry.name,
                )
            staged = self._stage(entry)
            if staged is not None:
                path, sha, info = staged
                split = split_from_folders(entry.name) or "train"
                self._add(entry, path, sha, info, split, [])

    def _sniff(self, entry: ZipEntry) -> str | None:
        """What the file is meant to be: a supported extension is taken at its word (decoding
        will tell), anything else is judged by its first bytes, then by its extension."""
        by_suffix = image_suffix_format(entry.name)
        if by_suffix in SUPPORTED_FORMATS or entry.declared_size == 0:
            return by_suffix
        return sniff_format(self.archive.head(entry, SNIFF_BYTES)) or by_suffix

    # --- shared ------------------------------------------------------------------------------

    def _stage(self, entry: ZipEntry) -> tuple[Path, str, ImageInfo] | None:
        """Copy, hash and decode one image; None when it duplicates one already staged."""
        if entry.name in self._staged_entries:
            self.notes.count("duplicate", example=f"{entry.name} (listed more than once)")
            return None
        self._staged_entries.add(entry.name)
        partial = self.staging_dir / f"{len(self._staged_entries):06d}.part"
        sha = self.archive.extract(entry, partial)
        first = self._first_by_sha.get(sha)
        if first is not None:
            partial.unlink()
            self.notes.count("duplicate", example=f"{entry.name} = {first}")
            return None
        try:
            info = probe_image(partial, max_pixels=self.limits.max_image_pixels, source=entry.name)
        except InvalidImage as exc:
            # Every ingest failure is an IngestError; the detail and culprit stay the image's own.
            raise InvalidContent(exc.detail, source=exc.source) from exc
        self._first_by_sha[sha] = entry.name
        path = partial.with_suffix(FORMAT_SUFFIX[info.format])
        partial.replace(path)
        return path, sha, info

    def _add(
        self,
        entry: ZipEntry,
        path: Path,
        sha: str,
        info: ImageInfo,
        split: str,
        annotations: Sequence[ParsedAnnotation],
    ) -> None:
        self.images.append(
            StagedImage(
                source=entry.name,
                staged_path=path,
                sha256=sha,
                width=info.width,
                height=info.height,
                format=info.format,
                split=split,
                annotations=annotations,
            )
        )
