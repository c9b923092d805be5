"""Plan a version from a dataset's rows and a spec: which images go where, under which classes, with how
many augmented copies, and the content hash that names the result. Pure: no I/O, deterministic."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from app.versions.augment import preview_seeds
from app.versions.schemas import VersionSpec
from app.versions.transforms import Instance

# Bump when the builder's output for the same input changes (resampling, encoding): a new hash, a new snapshot.
BUILDER_VERSION = 1
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class SourceImage:
    id: uuid.UUID
    object_key: str
    sha256: str
    width: int
    height: int
    split: str
    instances: tuple[Instance, ...]  # class_id = the DATASET's class position


@dataclass(frozen=True)
class PlannedImage:
    source: SourceImage
    split: str
    file_stem: str
    instances: tuple[Instance, ...]  # class_id = the VERSION's class index
    augment_seeds: tuple[int, ...]  # one per augmented copy (train only)


@dataclass
class Plan:
    classes: list[str]
    images: list[PlannedImage]
    content_hash: str
    dropped: dict[str, int] = field(default_factory=dict)


class PlanError(ValueError):
    pass


def map_classes(
    dataset_classes: Sequence[str], mapping: dict[str, str | None]
) -> tuple[list[str], list[int | None]]:
    """Apply {'old': 'new' | None}: returns the version's class names (first-seen order, merged names once)
    and, for each dataset class position, its version class index or None when dropped."""
    unknown = sorted(set(mapping) - set(dataset_classes))
    if unknown:
        raise PlanError(
            f"preprocessing.classes names {', '.join(repr(u) for u in unknown)}, not a class of this dataset "
            f"(classes: {', '.join(dataset_classes) or 'none'})"
        )
    names: list[str] = []
    index: list[int | None] = []
    for name in dataset_classes:
        target = mapping.get(name, name)
        if target is None:
            index.append(None)
            continue
        target = target.strip()
        if not target:
            raise PlanError(f"preprocessing.classes maps {name!r} to an empty name; use null to drop it")
        if target not in names:
            names.append(target)
        index.append(names.index(target))
    return names, index


def _rank(seed: int, sha: str) -> str:
    """An order that depends only on the seed and the image's content, not on upload order."""
    return hashlib.sha256(f"{seed}:{sha}".encode()).hexdigest()


def _assign_splits(images: list[SourceImage], spec: VersionSpec) -> dict[str, str]:
    split = spec.split
    if split.mode == "keep":
        assigned = {im.sha256: im.split for im in images}
    else:
        order = sorted(images, key=lambda im: _rank(split.seed, im.sha256))
        n = len(order)
        n_valid = round(n * split.valid)
        n_test = round(n * split.test)
        if n_valid + n_test > n:
            n_test = n - n_valid
        assigned = {}
        for i, im in enumerate(order):
            assigned[im.sha256] = "valid" if i < n_valid else "test" if i < n_valid + n_test else "train"
    # Training needs a validation split to pick the best checkpoint: carve one out of train when missing.
    if len(images) >= 2 and "valid" not in assigned.values():
        train = sorted((s for s, sp in assigned.items() if sp == "train"), key=lambda s: _rank(split.seed, s))
        donors = train if len(train) >= 2 else sorted(assigned, key=lambda s: _rank(split.seed, s))
        take = max(1, round(len(donors) * 0.1))
        for sha in donors[: min(take, len(donors) - 1)]:
            assigned[sha] = "valid"
    return assigned


def plan_version(dataset_classes: Sequence[str], images: Sequence[SourceImage], spec: VersionSpec) -> Plan:
    classes, class_index = map_classes(dataset_classes, spec.preprocessing.classes)
    dropped = {"instances_dropped_by_class_map": 0, "null_images_filtered": 0}

    mapped: list[tuple[SourceImage, tuple[Instance, ...]]] = []
    for im in sorted(images, key=lambda im: im.sha256):
        kept = []
        for inst in im.instances:
            new = class_index[inst.class_id]
            if new is None:
                dropped["instances_dropped_by_class_map"] += 1
            else:
                kept.append(Instance(new, inst.bbox, inst.segmentation, inst.iscrowd, inst.area))
        mapped.append((im, tuple(kept)))

    share = spec.preprocessing.filter_null
    if share > 0:
        null = sorted((im.sha256 for im, inst in mapped if not inst), key=lambda s: _rank(spec.split.seed, s))
        leave_out = set(null[: round(len(null) * share)])
        dropped["null_images_filtered"] = len(leave_out)
        mapped = [(im, inst) for im, inst in mapped if im.sha256 not in leave_out]
    if not mapped:
        raise PlanError(
            "no images are left for this version: the dataset is empty or every image was filtered out"
        )

    assigned = _assign_splits([im for im, _ in mapped], spec)
    aug = spec.augmentation
    planned = []
    for position, (im, instances) in enumerate(mapped):
        split = assigned[im.sha256]
        seeds: tuple[int, ...] = ()
        if split == "train" and aug.enabled:
            seeds = tuple(preview_seeds(aug.seed, position, aug.outputs_per_image - 1))
        planned.append(PlannedImage(im, split, im.sha256[:20], instances, seeds))

    return Plan(classes, planned, _content_hash(classes, planned, spec), dropped)


def _content_hash(classes: list[str], images: list[PlannedImage], spec: VersionSpec) -> str:
    """Names the snapshot: the same spec over the same dataset content gives the same hash, whatever the
    upload order or database ids."""
    digest = hashlib.sha256()
    head = {"builder": BUILDER_VERSION, "spec": spec.model_dump(mode="json"), "classes": classes}
    digest.update(json.dumps(head, sort_keys=True).encode())
    for p in images:
        record = [
            p.source.sha256,
            p.source.width,
            p.source.height,
            p.split,
            p.augment_seeds,
            [[i.class_id, list(i.bbox), i.segmentation, i.iscrowd] for i in p.instances],
        ]
        digest.update(json.dumps(record, sort_keys=True, default=_np_default).encode())
    return digest.hexdigest()


def _np_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot hash {type(value).__name__}")
