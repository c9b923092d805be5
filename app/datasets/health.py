"""Dataset health: the figures a person checks before training (Roboflow's "Dataset Health Check")."""

from __future__ import annotations

import statistics
import uuid
from collections import Counter, defaultdict

from sqlalchemy.orm import Session

from app.datasets import repository
from app.datasets.ingest import SPLITS
from app.datasets.schemas import ClassHealth, Health, SplitCounts, Stats

# SAM 3 sees every image at 1008x1008; an instance thinner than this many pixels there is barely visible.
TARGET_SIZE = 1008
TINY_PX = 4.0
_BUCKETS = ((0, 0, "0"), (1, 1, "1"), (2, 5, "2-5"), (6, 10, "6-10"), (11, 50, "11-50"), (51, 10**9, "51+"))


def _stats(values: list[float]) -> Stats | None:
    if not values:
        return None
    return Stats(
        min=float(min(values)),
        max=float(max(values)),
        mean=round(statistics.fmean(values), 3),
        median=float(statistics.median(values)),
    )


def dataset_health(session: Session, dataset_id: uuid.UUID) -> Health:
    images = repository.image_rows(session, dataset_id)
    annotations = repository.annotation_rows(session, dataset_id)
    categories = repository.categories(session, dataset_id)

    split_of = {row.id: row.split for row in images}
    per_image: Counter[uuid.UUID] = Counter()
    per_split_anns: Counter[str] = Counter()
    class_instances: Counter[uuid.UUID] = Counter()
    class_images: defaultdict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
    tiny = 0
    for row in annotations:
        per_image[row.image_id] += 1
        per_split_anns[split_of[row.image_id]] += 1
        class_instances[row.category_id] += 1
        class_images[row.category_id].add(row.image_id)
        _, _, w, h = row.bbox
        # Under the default stretch resize each axis scales on its own.
        if w * TARGET_SIZE / row.width < TINY_PX or h * TARGET_SIZE / row.height < TINY_PX:
            tiny += 1

    per_split_imgs = Counter(row.split for row in images)
    without = Counter(row.split for row in images if per_image[row.id] == 0)
    counts = [per_image[row.id] for row in images]
    histogram = {label: sum(1 for n in counts if lo <= n <= hi) for lo, hi, label in _BUCKETS}

    classes = [
        ClassHealth(
            name=c.name, class_id=c.position, instances=class_instances[c.id], images=len(class_images[c.id])
        )
        for c in categories
    ]
    warnings: list[str] = []
    if images and not per_split_imgs.get("valid"):
        warnings.append("no valid split: a version will carve one out of train")
    for c in classes:
        if c.instances == 0:
            warnings.append(f"class {c.name!r} has no instances")
    if classes and any(c.instances for c in classes):
        top = max(c.instances for c in classes)
        for c in classes:
            if 0 < c.instances * 10 < top:
                warnings.append(
                    f"class {c.name!r} is rare: {c.instances} instances against {top} for the largest"
                )
    if without:
        warnings.append(f"{sum(without.values())} image(s) have no annotations")
    if tiny:
        warnings.append(
            f"{tiny} instance(s) would be under {TINY_PX:g} px wide or tall at {TARGET_SIZE}x{TARGET_SIZE}"
        )

    return Health(
        splits={
            s: SplitCounts(images=per_split_imgs[s], annotations=per_split_anns[s])
            for s in SPLITS
            if per_split_imgs[s]
        },
        classes=classes,
        image_width=_stats([row.width for row in images]),
        image_height=_stats([row.height for row in images]),
        images_without_annotations={s: without[s] for s in SPLITS if per_split_imgs[s]},
        instances_per_image=_stats([float(n) for n in counts]),
        instances_per_image_histogram=histogram,
        tiny_at_1008=tiny,
        tiny_threshold_px=TINY_PX,
        warnings=warnings,
    )
