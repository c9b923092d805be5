"""Recognise how an upload is organised and where its annotation files and images are.

Works on entry names only; nothing here reads file contents.
"""

from __future__ import annotations

import posixpath
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .errors import InvalidContent
from .models import SPLITS

ROBOFLOW_ANNOTATIONS = "_annotations.coco.json"
_SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "valid": "valid",
    "val": "valid",
    "validation": "valid",
    "test": "test",
    "testing": "test",
}


@dataclass(frozen=True)
class AnnotationFile:
    entry: str
    split: str


@dataclass(frozen=True)
class Layout:
    kind: str  # "coco" | "roboflow_coco" | "odinw" | "images_only"
    annotation_files: list[AnnotationFile]
    scope: str = ""  # folder prefix ("a/b/") the upload is restricted to; "" is the whole zip
    subset: str | None = None
    unused_json: list[str] = field(default_factory=list)


def split_from_folders(path: str) -> str | None:
    """The split named by the nearest enclosing train/valid/test folder, if any."""
    for part in reversed(path.split("/")[:-1]):
        split = _SPLIT_FOLDERS.get(part.lower())
        if split:
            return split
    return None


def split_from_json_name(path: str) -> str:
    name = posixpath.basename(path).lower()
    for word, split in (("train", "train"), ("val", "valid"), ("test", "test")):
        if word in name:
            return split
    return split_from_folders(path) or "train"


def _split_order(item: AnnotationFile) -> tuple[int, str]:
    return (SPLITS.index(item.split), item.entry)


def _subset_labels(roots: Iterable[str]) -> dict[str, str]:
    """Label each subset by its folder name, or by its full path when folder names collide."""
    roots = sorted(roots)
    bases = [posixpath.basename(r) or r or "(top level)" for r in roots]
    unique = len(set(bases)) == len(bases)
    return {
        root: (base if unique else (root or "(top level)")) for root, base in zip(roots, bases, strict=True)
    }


def _pick_subset(labels: dict[str, str], subset: str | None, kind: str) -> str:
    listing = ", ".join(sorted(labels.values()))
    if subset is None:
        if len(labels) == 1:
            return next(iter(labels))
        raise InvalidContent(
            f"the zip holds several dataset subsets ({listing}); pass `subset` to choose one",
            extra={"subsets": sorted(labels.values())},
        )
    for wanted in (subset, subset.casefold()):
        for root, label in labels.items():
            if wanted in (label, root) or wanted in (label.casefold(), root.casefold()):
                return root
    if kind == "odinw":
        detail = f"subset {subset!r} is not in the zip; it holds {listing}"
    else:
        detail = f"subset {subset!r} was given, but this zip has no subset of that name (found {listing})"
    raise InvalidContent(detail, extra={"subsets": sorted(labels.values())})


def detect_layout(names: Sequence[str], subset: str | None = None) -> Layout:
    json_names = [n for n in names if n.lower().endswith(".json")]
    if not json_names:
        if subset is not None:
            raise InvalidContent(f"subset {subset!r} was given, but this zip has no annotation files")
        return Layout("images_only", [])

    # Roboflow / ODinW: `_annotations.coco.json` inside a split folder; the folder above the
    # split folders is the dataset (or, for ODinW, subset) root.
    by_root: dict[str, list[AnnotationFile]] = defaultdict(list)
    for name in json_names:
        parent = posixpath.dirname(name)
        split = _SPLIT_FOLDERS.get(posixpath.basename(parent).lower())
        if posixpath.basename(name).lower() == ROBOFLOW_ANNOTATIONS and split:
            by_root[posixpath.dirname(parent)].append(AnnotationFile(name, split))

    if not by_root:
        if subset is not None:
            raise InvalidContent(f"subset {subset!r} was given, but this zip has no subsets")
        files = [AnnotationFile(n, split_from_json_name(n)) for n in json_names]
        return Layout("coco", sorted(files, key=_split_order))

    single_shallow = len(by_root) == 1 and next(iter(by_root)).count("/") == 0
    kind = "roboflow_coco" if single_shallow else "odinw"
    labels = _subset_labels(by_root)
    if kind == "roboflow_coco" and subset is None:
        root = next(iter(by_root))
    else:
        root = _pick_subset(labels, subset, kind)
    chosen = sorted(by_root[root], key=_split_order)
    used = {f.entry for f in chosen}
    # Only ODinW narrows the upload to one subset; a Roboflow export's top folder is all of it.
    scope = f"{root}/" if root and kind == "odinw" else ""
    unused = [n for n in json_names if n not in used and n.startswith(scope)]
    return Layout(
        kind, chosen, scope=scope, subset=labels[root] if kind == "odinw" else None, unused_json=unused
    )


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


class EntryResolver:
    """Find the zip entry an annotation file's `file_name` refers to."""

    def __init__(self, names: Iterable[str]) -> None:
        self._by_path: dict[str, str] = {}
        self._by_base: dict[str, list[str]] = defaultdict(list)
        for name in names:
            # macOS writes decomposed Unicode into zips; annotation tools usually write composed.
            key = _nfc(name)
            self._by_path[key] = name
            self._by_base[posixpath.basename(key)].append(name)

    def resolve(self, file_name: str, json_dir: str, source: str) -> str | None:
        """Relative to the JSON's folder, else to the zip root, else by a unique base name."""
        wanted = _nfc(file_name.replace("\\", "/"))
        candidates = []
        if not wanted.startswith("/"):
            candidates.append(posixpath.normpath(posixpath.join(json_dir, wanted)))
        candidates.append(posixpath.normpath(wanted.lstrip("/")))
        for candidate in candidates:
            if not candidate.startswith("../") and candidate in self._by_path:
                return self._by_path[candidate]
        matches = self._by_base.get(posixpath.basename(wanted), [])
        if len(matches) > 1:
            shown = ", ".join(sorted(matches)[:5])
            raise InvalidContent(
                f"{source}: image {file_name!r} matches several files in the zip ({shown}); "
                "use paths relative to the annotation file",
                source=source,
            )
        return matches[0] if matches else None
