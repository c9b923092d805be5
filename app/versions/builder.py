"""Build a version's snapshot: every image resized (and augmented for train), annotations moved with the
pixels, written to storage as `{train,valid,test}/_annotations.coco.json` with the images beside them.

Runs in a worker (Celery `cpu` queue), never inside a request. Safe to run twice: each build first claims the
version's lease (app/core/lease.py, counting the attempt), and every write it makes on the version after that
is fenced by its token, so a build presumed dead (its lease reaped and claimed by another) changes nothing and
stops; equal input writes equal bytes to the same content-named prefix.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import transaction, utcnow
from app.core.lease import may_start
from app.core.storage import ObjectStorage
from app.datasets.tables import Dataset
from app.images.decode import load_rgb_for_resize
from app.settings import Settings
from app.versions import repository
from app.versions.augment import augment
from app.versions.plan import SPLITS, Plan, PlannedImage, plan_version
from app.versions.repository import MAX_ATTEMPTS
from app.versions.schemas import VersionSpec
from app.versions.tables import DatasetVersion
from app.versions.transforms import Instance, resize, transform_instances

logger = logging.getLogger("samtune.versions")

JPEG_QUALITY = 95
_PROGRESS_EVERY_S = 1.0


class LeaseLost(Exception):
    """Another attempt holds the build now (this one was presumed dead): stop without touching the version."""


@dataclass(frozen=True)
class OutputImage:
    split: str
    file_name: str
    width: int
    height: int
    instances: list[Instance]


@dataclass(frozen=True)
class ImageResult:
    outputs: list[OutputImage]
    vanished: int


def snapshot_prefix(dataset: Dataset, content_hash: str) -> str:
    return f"workspaces/{dataset.workspace_id}/datasets/{dataset.id}/snapshots/{content_hash}/"


def _encode_jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def process_image(
    item: PlannedImage, spec: VersionSpec, storage: ObjectStorage, prefix: str, settings: Settings
) -> ImageResult:
    """Decode once, resize, write the image and its augmented copies; return their annotations."""
    pre = spec.preprocessing
    size = (pre.resize.width, pre.resize.height)
    src = item.source
    img, orientation = load_rgb_for_resize(
        storage.get_bytes(src.object_key),
        size,
        auto_orient=pre.auto_orient,
        max_pixels=settings.max_image_pixels,
    )
    unorient = None if pre.auto_orient or orientation in (0, 1) else orientation
    # The frame of the pixels as decoded: upright, or as stored when unorient moves the annotations back.
    out, frame = resize(img, pre.resize)
    instances, vanished = transform_instances(
        item.instances, src.width, src.height, frame, min_instance_px=pre.min_instance_px, unorient=unorient
    )
    outputs = []
    name = f"{item.file_stem}.jpg"
    storage.put_bytes(f"{prefix}{item.split}/{name}", _encode_jpeg(out))
    outputs.append(OutputImage(item.split, name, out.width, out.height, instances))
    for k, seed in enumerate(item.augment_seeds, start=1):
        aug_img, aug_instances = augment(out, instances, spec.augmentation, seed)
        aug_name = f"{item.file_stem}_aug{k}.jpg"
        storage.put_bytes(f"{prefix}{item.split}/{aug_name}", _encode_jpeg(aug_img))
        outputs.append(OutputImage(item.split, aug_name, aug_img.width, aug_img.height, aug_instances))
    return ImageResult(outputs, vanished)


def coco_document(classes: list[str], outputs: list[OutputImage]) -> dict:
    images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    for image_id, out in enumerate(sorted(outputs, key=lambda o: o.file_name), start=1):
        images.append({"id": image_id, "file_name": out.file_name, "width": out.width, "height": out.height})
        for inst in out.instances:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": inst.class_id + 1,
                    "bbox": [round(float(v), 3) for v in inst.bbox],
                    "segmentation": inst.segmentation if inst.segmentation is not None else [],
                    "area": round(float(inst.area), 3),
                    "iscrowd": int(inst.iscrowd),
                }
            )
    categories = [{"id": i + 1, "name": name, "supercategory": "none"} for i, name in enumerate(classes)]
    return {"info": {"description": "samtune dataset version"}, "images": images, "annotations": annotations,
            "categories": categories}  # fmt: skip


def _bounded_map(
    fn: Callable[[PlannedImage], ImageResult], items: list[PlannedImage], workers: int
) -> Iterator[ImageResult]:
    """Run fn over items on a thread pool with at most 2*workers in flight, so memory does not grow with
    the dataset. Pillow and numpy release the GIL in decode, resize and encode, so threads use both cores."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="version-build") as pool:
        pending: set[Future[ImageResult]] = set()
        queue = iter(items)
        for item in queue:
            pending.add(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
                nxt = next(queue, None)
                if nxt is not None:
                    pending.add(pool.submit(fn, nxt))


class VersionBuilder:
    """One build, top to bottom: load and plan, reuse or write the snapshot, record the result."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        storage: ObjectStorage,
        settings: Settings,
        *,
        workers: int | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.storage = storage
        self.settings = settings
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))

    def build(self, version_id: uuid.UUID) -> str:
        """Returns the final status ("lease lost" for a build presumed dead and taken over, its status for a
        version that was not this build's to take). Exceptions are recorded on the version, not raised."""
        token = uuid.uuid4().hex
        loaded = self._claim(version_id, token)
        if isinstance(loaded, str):
            return loaded
        dataset, spec, classes, sources = loaded
        prefix = None
        try:
            plan = plan_version(classes, sources, spec)
            prefix = snapshot_prefix(dataset, plan.content_hash)
            if not self._reuse(version_id, token, dataset.id, plan, prefix):
                self._write(version_id, token, spec, plan, prefix)
            return "ready"
        except LeaseLost as exc:
            logger.warning("%s", exc)
            self._abandon(version_id, prefix)
            return "lease lost"
        except Exception as exc:
            logger.exception("version %s failed", version_id)
            return self._fail(version_id, token, prefix, exc)

    def _claim(self, version_id: uuid.UUID, token: str):  # type: ignore[no-untyped-def]
        """What the build needs, once this attempt holds the version's lease; else, in a word, why not."""
        with transaction(self.session_factory) as session:
            if not repository.claim(session, version_id, token, utcnow()):
                version = session.get(DatasetVersion, version_id)
                state = version.status if version else "gone"
                logger.info("build of version %s not claimed: it is %s (or another worker holds it)",
                            version_id, state)  # fmt: skip
                return state
            found = repository.get_any(session, version_id)
            assert found is not None
            version, dataset = found
            session.refresh(version)
            # Reached when a redelivered message claims a build whose lease expired before the reaper saw it.
            if not may_start(version.attempts, MAX_ATTEMPTS):
                self._end(version, "failed", error=repository.gave_up(version.attempts - 1))
                return "failed"
            spec = VersionSpec.model_validate(version.spec)
            return (
                dataset,
                spec,
                repository.class_names(session, dataset.id),
                repository.source_images(session, dataset.id),
            )

    def _reuse(
        self, version_id: uuid.UUID, token: str, dataset_id: uuid.UUID, plan: Plan, prefix: str
    ) -> bool:
        """An identical snapshot already exists (same spec over the same content): point at it."""
        with transaction(self.session_factory) as session:
            twin = repository.ready_with_hash(session, dataset_id, plan.content_hash)
            if twin is None or twin.snapshot_prefix != prefix:
                return False
            self._finish(session, version_id, token, plan, prefix, twin.split_counts, twin.dropped)
            return True

    def _write(self, version_id: uuid.UUID, token: str, spec: VersionSpec, plan: Plan, prefix: str) -> None:
        outputs: dict[str, list[OutputImage]] = defaultdict(list)
        vanished = 0
        total = len(plan.images)
        last_beat = 0.0

        def work(item: PlannedImage) -> ImageResult:
            try:
                return process_image(item, spec, self.storage, prefix, self.settings)
            except Exception as exc:
                raise RuntimeError(f"image {item.source.sha256[:12]} could not be processed: {exc}") from exc

        for done, result in enumerate(_bounded_map(work, plan.images, self.workers), start=1):
            vanished += result.vanished
            for out in result.outputs:
                outputs[out.split].append(out)
            if time.monotonic() - last_beat > _PROGRESS_EVERY_S:
                last_beat = time.monotonic()
                self._renew(version_id, token, 0.95 * done / total)

        counts: dict[str, dict[str, int]] = {}
        # Annotation files last: a snapshot without them is not a snapshot, whatever images were written.
        for split in SPLITS:
            if outputs[split]:
                doc = coco_document(plan.classes, outputs[split])
                self.storage.put_bytes(f"{prefix}{split}/_annotations.coco.json", json.dumps(doc).encode())
                counts[split] = {"images": len(doc["images"]), "annotations": len(doc["annotations"])}
        dropped = {**plan.dropped, "instances_vanished_or_too_small": vanished}
        with transaction(self.session_factory) as session:
            self._finish(session, version_id, token, plan, prefix, counts, dropped)

    def _renew(self, version_id: uuid.UUID, token: str, progress: float) -> None:
        """Record progress and renew the lease; LeaseLost once it is no longer this build's."""
        with transaction(self.session_factory) as session:
            if not repository.renew(session, version_id, token, progress, utcnow()):
                raise LeaseLost(f"version {version_id}: the build's lease was lost (deleted, or taken over)")

    def _finish(
        self, session: Session, version_id: uuid.UUID, token: str, plan: Plan, prefix: str, counts: dict,
        dropped: dict,
    ) -> None:  # fmt: skip
        version = repository.fenced(session, version_id, token)
        if version is None:
            raise LeaseLost(f"version {version_id}: the build's lease was lost before it could finish")
        version.progress = 1.0
        version.split_counts = counts
        version.dropped = dropped
        version.classes = plan.classes
        version.content_hash = plan.content_hash
        version.snapshot_prefix = prefix
        version.ready_at = utcnow()
        version.heartbeat_at = version.ready_at
        self._end(version, "ready", error=None)

    def _fail(self, version_id: uuid.UUID, token: str, prefix: str | None, exc: Exception) -> str:
        with transaction(self.session_factory) as session:
            version = repository.fenced(session, version_id, token)
            if version is None:
                logger.warning("version %s: lease lost; its failure is not recorded", version_id)
                self._discard(session, version_id, prefix)
                return "lease lost"
            self._end(version, "failed", error=str(exc) or type(exc).__name__)
            # Remove what this build wrote, unless a ready version already owns that snapshot.
            if prefix is not None and not repository.prefix_users(session, prefix, excluding=version_id):
                self.storage.delete_prefix(prefix)
        return "failed"

    def _abandon(self, version_id: uuid.UUID, prefix: str | None) -> None:
        with transaction(self.session_factory) as session:
            self._discard(session, version_id, prefix)

    def _discard(self, session: Session, version_id: uuid.UUID, prefix: str | None) -> None:
        """After the lease was lost: a version deleted while it was building leaves no files behind; one that
        another attempt took over keeps them (that attempt writes the same content-named prefix)."""
        if prefix is None or session.get(DatasetVersion, version_id) is not None:
            return
        if not repository.prefix_users(session, prefix, excluding=version_id):
            self.storage.delete_prefix(prefix)

    @staticmethod
    def _end(version: DatasetVersion, status: str, *, error: str | None) -> None:
        """The build is over: its outcome, and no lease held on the version any more."""
        version.status = status
        version.error = error
        version.lease_token = None
        version.lease_expires_at = None


def build_version(
    session_factory: sessionmaker[Session], storage: ObjectStorage, settings: Settings, version_id: uuid.UUID
) -> str:
    return VersionBuilder(session_factory, storage, settings).build(version_id)
