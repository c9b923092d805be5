"""Roboflow's REST API answered from samtune's own objects: a workspace is a workspace, a project a dataset
(Roboflow's project id is `{workspace}/{dataset slug}`), a version a version, a training the version's newest
job, a model the version's newest model that `{slug}/{number}` serves. The JSON shapes are the ones the
`roboflow` package reads (roboflow/core/workspace.py, project.py, version.py; roboflow/adapters/rfapi.py)."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from zipstream import ZIP_STORED, ZipStream

from app.core.errors import AppError, Conflict, NotFound, Unauthorized, Unprocessable
from app.core.queue import TaskQueue
from app.core.storage import ObjectStorage, iter_object
from app.datasets import repository as datasets_repository
from app.datasets import service as datasets
from app.datasets.ingest import ParsedUpload, StagedImage
from app.datasets.ingest.annotations import Frame, build_annotation
from app.datasets.ingest.coco import CocoAnnotation, id_key, index_coco, parse_coco
from app.datasets.ingest.errors import IngestError
from app.datasets.ingest.notes import Notes
from app.datasets.tables import Annotation, Category, Dataset, Image
from app.images.decode import probe_image
from app.images.errors import InvalidImage
from app.images.formats import FORMAT_SUFFIX
from app.jobs import repository as jobs_repository
from app.jobs import service as jobs
from app.jobs.feed import Publisher
from app.jobs.schemas import JobCreate
from app.jobs.tables import TrainingJob
from app.metrics.series import UPLOAD_BYTES
from app.models import service as models
from app.roboflow_api import links, repository
from app.roboflow_api.schemas import CreateProject, TrainBody
from app.roboflow_api.spec import version_spec
from app.settings import Settings
from app.versions import repository as versions_repository
from app.versions import service as versions
from app.versions.tables import DatasetVersion
from app.workspaces.tables import Workspace

PROJECT_TYPE = "instance-segmentation"  # every samtune dataset: masks, with their boxes
# Roboflow's project types that a samtune dataset can stand for (upload_dataset's default is object-detection).
ACCEPTED_TYPES = (PROJECT_TYPE, "object-detection")
EXPORT_FORMAT = "coco"
# `version.train()` prepares this export before it asks for training (roboflow/util/versions.get_model_format
# without a model type); samtune trains from the version itself, so it is listed as prepared. Downloading it is
# refused (only COCO is exported).
TRAIN_FORMAT = "yolov5pytorch"
SPLITS = ("train", "valid", "test")
# `version.train()` must be given a model type (roboflow 1.7.3 fails without one); this one names the
# installation's default base model, as GET /api/v1/base-models shows it.
DEFAULT_MODEL_TYPE = "sam3"
# Colours for classes, in class order (Roboflow's project JSON carries one per class).
PALETTE = ("#C7FC00", "#FF00FF", "#8622FF", "#FE0056", "#00FFCE", "#FF8000", "#00B7EB", "#FFFF00", "#0E7AFE",
           "#FFABAB", "#0000FF", "#CCCCCC")  # fmt: skip
# Roboflow's upload_dataset marks an image without annotations by one placeholder annotation (image_id and id
# 999999999, empty segmentation, no box): it stands for "no objects" and is not an annotation.
PLACEHOLDER_ID = "999999999"


class WorkspaceNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"workspace {name!r} not found for this API key")


class ProjectNotFound(NotFound):
    def __init__(self, slug: str) -> None:
        super().__init__(f"project {slug!r} not found in this workspace")


def _ts(when: datetime | None) -> float:
    return when.timestamp() if when is not None else 0.0


# --- look-ups -------------------------------------------------------------------------------------------


def workspace_of(session: Session, workspace_id: uuid.UUID, name: str | None = None) -> Workspace:
    """The key's workspace; 404 if `name` is given and is not its name (another workspace is as if absent)."""
    workspace = repository.workspace(session, workspace_id)
    if name is not None and name != workspace.name:
        raise WorkspaceNotFound(name)
    return workspace


def project(session: Session, workspace_id: uuid.UUID, slug: str) -> Dataset:
    dataset = repository.dataset_by_slug(session, workspace_id, slug)
    if dataset is None:
        raise ProjectNotFound(slug)
    return dataset


def version_of(session: Session, dataset: Dataset, number: str) -> DatasetVersion:
    try:
        n = int(number)
        if not 0 < n < 2**31:  # 32-bit in the database
            raise ValueError(number)
    except ValueError:
        raise NotFound(f"version {number!r} not found: versions are numbered 1, 2, ...") from None
    version = repository.version_by_number(session, dataset.id, n)
    if version is None:
        raise NotFound(f"version {n} of project {dataset.slug!r} not found")
    return version


def linked_version(session: Session, version_id: uuid.UUID, workspace: str, slug: str,
                   number: str) -> tuple[DatasetVersion, Dataset]:  # fmt: skip
    """The version an export link's token was issued for, if the link's path names it; else 401 as any invalid
    link (nothing tells whether the path names something else)."""
    found = versions_repository.get_any(session, version_id)
    if found is not None:
        version, dataset = found
        owner = repository.workspace(session, dataset.workspace_id)
        if (owner.name, dataset.slug, str(version.number)) == (workspace, slug, number):
            return version, dataset
    raise Unauthorized(links.INVALID)


# --- JSON as the SDK reads it ----------------------------------------------------------------------------


def project_json(session: Session, workspace: Workspace, dataset: Dataset) -> dict[str, Any]:
    counts = datasets_repository.split_counts(session, [dataset.id])[dataset.id]
    classes = repository.class_counts(session, dataset.id)
    return {
        "id": f"{workspace.name}/{dataset.slug}",
        "name": dataset.name,
        "type": PROJECT_TYPE,
        "annotation": dataset.name,
        "classes": classes,
        "colors": {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(classes)},
        "created": _ts(dataset.created_at),
        "updated": _ts(repository.last_image_at(session, dataset.id) or dataset.created_at),
        "images": sum(images for images, _ in counts.values()),
        "unannotated": repository.unannotated_count(session, dataset.id),
        "splits": {s: counts.get(s, (0, 0))[0] for s in SPLITS},
        "public": False,
        "versions": len(versions_repository.list_for_dataset(session, dataset.id)),
    }


def workspace_json(session: Session, workspace: Workspace) -> dict[str, Any]:
    projects = [
        project_json(session, workspace, d)
        for d in datasets_repository.list_for_workspace(session, workspace.id)
    ]
    return {"workspace": {"name": workspace.name, "url": workspace.name, "projects": projects, "members": 1}}


def _train_json(session: Session, job: TrainingJob) -> dict[str, Any]:
    """The training as `version.train()` polls it: it stops at `results` (done) or status 'failed'."""
    out: dict[str, Any] = {"id": str(job.id), "samtune_status": job.status}
    if job.status == "succeeded":
        model = jobs_repository.model_row(session, job.id)
        test = ((model.eval_results if model else None) or {}).get("test") or {}
        out |= {"status": "finished", "results": (test.get("fine_tuned") or {}).get("summary") or {}}
    elif job.status in ("failed", "cancelled", "interrupted"):
        out |= {"status": "failed", "error": job.error or f"the job was {job.status}"}
    else:
        progress = job.progress or {}
        total = progress.get("total_steps") or 0
        out |= {"status": "running", "progress": (progress.get("step", 0) / total) if total else 0.0}
    return out


def version_json(
    session: Session, workspace: Workspace, dataset: Dataset, version: DatasetVersion
) -> dict[str, Any]:
    splits = {s: int((version.split_counts or {}).get(s, {}).get("images", 0)) for s in SPLITS}
    spec = version.spec or {}
    out: dict[str, Any] = {
        "id": f"{workspace.name}/{dataset.slug}/{version.number}",
        "name": dataset.name,
        "version": str(version.number),
        "created": _ts(version.created_at),
        "images": sum(splits.values()),
        "splits": splits,
        "preprocessing": spec.get("preprocessing", {}),
        "augmentation": spec.get("augmentation", {}),
        "classes": list(version.classes or []),
        "generating": version.status == "building",
        "progress": round(version.progress, 4),
        "status": version.status,
        # Listed from the start: the SDK reads them once, when it builds its Version object, and then asks for
        # an export only of a format not listed (Version.export polls the 202s; download and train wait for the
        # build first).
        "exports": [EXPORT_FORMAT, TRAIN_FORMAT] if version.status != "failed" else [],
    }
    if version.status == "failed":
        out["error"] = version.error
    job = repository.newest_job(session, workspace.id, version.id)
    if job is not None:
        out["train"] = _train_json(session, job)
    try:
        model, *_ = models.by_reference(session, workspace.id, f"{dataset.slug}/{version.number}")
    except NotFound:
        pass
    else:
        out["model"] = {"id": f"{dataset.slug}/{version.number}", "model_id": str(model.id),
                        "endpoint": f"/{dataset.slug}/{version.number}"}  # fmt: skip
    return out


def project_with_versions(session: Session, workspace: Workspace, dataset: Dataset) -> dict[str, Any]:
    return {
        "workspace": {"name": workspace.name, "url": workspace.name, "members": 1},
        "project": project_json(session, workspace, dataset),
        "versions": [
            version_json(session, workspace, dataset, v)
            for v in versions_repository.list_for_dataset(session, dataset.id)
        ],
    }


def one_version(
    session: Session, workspace: Workspace, dataset: Dataset, version: DatasetVersion
) -> dict[str, Any]:
    """GET /{workspace}/{project}/{n}. A failed build is an error, not a version: the SDK waits for a version
    while it has no images, so answering one would keep it waiting for ever."""
    if version.status == "failed":
        raise Conflict(f"version {version.number} of {dataset.slug!r} failed to build: {version.error}")
    return {
        "workspace": {"name": workspace.name, "url": workspace.name, "members": 1},
        "project": project_json(session, workspace, dataset),
        "version": version_json(session, workspace, dataset, version),
    }


# --- writes -----------------------------------------------------------------------------------------------


def create_project(session: Session, workspace: Workspace, body: CreateProject) -> dict[str, Any]:
    if body.type not in ACCEPTED_TYPES:
        raise Unprocessable(f"project type {body.type!r} is not offered here: samtune trains instance "
                            f"segmentation ({' or '.join(ACCEPTED_TYPES)} is accepted)", source="type")  # fmt: skip
    dataset = datasets.create_dataset(session, workspace.id, body.name)
    return project_json(session, workspace, dataset)


def upload_image(session: Session, storage: ObjectStorage, settings: Settings, dataset: Dataset, upload: BinaryIO,
                 *, name: str, split: str) -> dict[str, Any]:  # fmt: skip
    """One image into the dataset, as a zip's images are merged; {"duplicate": true} with the stored image's id
    when the same content is already there."""
    if split not in SPLITS:
        raise Unprocessable(f"split {split!r} is not one of {', '.join(SPLITS)}", source="split")
    staging = Path(tempfile.mkdtemp(dir=settings.tmp_dir, prefix="rf-upload-"))
    try:
        partial = staging / "image.part"
        digest = hashlib.sha256()
        with open(partial, "wb") as out:
            while chunk := upload.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        UPLOAD_BYTES.labels("roboflow_image").observe(partial.stat().st_size)
        if partial.stat().st_size == 0:
            raise Unprocessable("file: the image is empty", source="file")
        sha = digest.hexdigest()
        try:
            info = probe_image(partial, max_pixels=settings.max_image_pixels, source=name or "file")
        except InvalidImage as exc:
            raise Unprocessable(exc.detail, source="file") from None
        # The SDK uploads ten images at a time, and a folder may hold the same picture twice. Two uploads of one
        # content would both find it absent, both store its object (one key per content) and race on the insert;
        # the loser's rollback would then delete the object the winner's row points to. So the dataset is locked
        # first (its row on PostgreSQL, the database's write lock on SQLite) and the check follows: the second
        # waits, then sees the first's image.
        datasets_repository.lock(session, dataset.id)
        existing = repository.image_by_sha(session, dataset.id, sha)
        if existing is not None:
            return {"duplicate": True, "id": str(existing.id)}
        path = partial.with_suffix(FORMAT_SUFFIX[info.format])
        partial.replace(path)
        staged = StagedImage(source=name or f"image{FORMAT_SUFFIX[info.format]}", staged_path=path, sha256=sha,
                             width=info.width, height=info.height, format=info.format, split=split)  # fmt: skip
        datasets.add_staged(session, storage, dataset, ParsedUpload("roboflow_upload", [staged], [], []))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    image = repository.image_by_sha(session, dataset.id, sha)
    assert image is not None  # just inserted in this transaction
    return {"success": True, "id": str(image.id)}


def _own_annotations(text: str, name: str, image: Image) -> tuple[list[tuple[CocoAnnotation, str]], Frame]:
    """The annotations of `image` in Roboflow's COCO text: the file's one image, or the one whose file name is
    the image's; the placeholder of an unlabeled image counts for none."""
    if not name.lower().endswith(".json"):
        raise Unprocessable(f"annotation {name!r}: only COCO JSON annotations are read here", source="name")
    try:
        doc = parse_coco(text.encode(), name)
        real = [a for a in doc.annotations if id_key(a.image_id) != PLACEHOLDER_ID]
        index = index_coco(doc.model_copy(update={"annotations": real}), name)
    except IngestError as exc:
        raise Unprocessable(exc.detail, source="annotationFile") from None
    records = list(index.images.values())
    if len(records) != 1:
        records = [r for r in records if Path(r.file_name).name == image.file_name]
    if len(records) != 1:
        raise Unprocessable(f"annotation {name!r} lists {len(index.images)} images and none is named "
                            f"{image.file_name!r}", source="annotationFile")  # fmt: skip
    record = records[0]
    anns = [
        (a, index.categories[id_key(a.category_id)].name)
        for a in index.annotations_by_image[id_key(record.id)]
    ]
    return anns, Frame(image.width, image.height)


def _category(session: Session, dataset: Dataset, name: str) -> Category:
    """The dataset's class `name`, added at the next position if new. The SDK uploads with ten threads, so two
    requests may add the same class (or two classes at the same position) at once: the loser's insert fails on
    the unique constraint inside a savepoint, and it reads again."""
    for _ in range(10):
        known = {c.name: c for c in datasets_repository.categories(session, dataset.id)}
        if name in known:
            return known[name]
        position = max((c.position for c in known.values()), default=-1) + 1
        try:
            with session.begin_nested():
                category = Category(id=uuid.uuid4(), dataset_id=dataset.id, name=name, position=position)
                session.add(category)
            return category
        except IntegrityError:
            continue
    raise Conflict(f"class {name!r} could not be added: other uploads kept adding classes; try again")


def annotate(
    session: Session,
    dataset: Dataset,
    image_id: str,
    *,
    name: str,
    text: str,
    overwrite: bool,
    max_classes: int,
) -> dict[str, Any]:
    """Roboflow's annotation of an uploaded image: its COCO text, normalised as a zip's annotations are; 409
    'already annotated' (which the SDK reports as a warning) unless `overwrite`."""
    try:
        image = datasets_repository.get_image(session, dataset.id, uuid.UUID(image_id))
    except ValueError:
        image = None
    if image is None:
        raise NotFound(f"image {image_id!r} not found in project {dataset.slug!r}")
    found, frame = _own_annotations(text, name, image)
    notes = Notes()
    parsed = [(p, category) for a, category in found
              if (p := build_annotation(a, category, frame, notes, name)) is not None]  # fmt: skip
    if repository.has_annotations(session, image.id):
        if not overwrite:
            raise Conflict(
                f"image {image_id} is already annotated; pass overwrite to replace its annotations"
            )
        repository.delete_annotations(session, image.id)
    names = list(dict.fromkeys(c for _, c in parsed))
    existing = {c.name for c in datasets_repository.categories(session, dataset.id)}
    total = len(existing | set(names))
    if total > max_classes:
        raise Unprocessable(f"annotation {name!r} would bring project {dataset.slug!r} to {total} classes, more than "
                            f"the limit of {max_classes} classes per dataset (SAMTUNE_MAX_CLASSES)",
                            source="annotationFile")  # fmt: skip
    known = {n: _category(session, dataset, n) for n in names}
    if parsed:
        rows = [{"id": uuid.uuid4(), "image_id": image.id, "category_id": known[c].id, "bbox": [float(v) for v in p.bbox],
                 "segmentation": p.segmentation, "area": float(p.area), "iscrowd": bool(p.iscrowd)}
                for p, c in parsed]  # fmt: skip
        session.execute(insert(Annotation), rows)
        session.flush()
    return {"success": True, "annotations": len(parsed), "warnings": notes.render()}


def generate(session: Session, tasks: TaskQueue, workspace: Workspace, dataset: Dataset,
             settings: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    spec = version_spec(settings)
    version, _ = versions.create_version(session, tasks, workspace.id, dataset.id, spec)
    return {"message": "version generation started", "version": version.number}


def train(session: Session, settings: Settings, tasks: TaskQueue, publisher: Publisher, workspace: Workspace,
          dataset: Dataset, version: DatasetVersion, body: TrainBody) -> dict[str, Any]:  # fmt: skip
    """A job on the version. `checkpoint` (a model to continue from) and `modelType` (a base model) are samtune's
    base_model, checkpoint first; modelType 'sam3' (or none) is the installation's default base. `speed` has no
    counterpart: the automatic hyperparameters decide, `epochs` overrides theirs."""
    model_type = None if body.modelType in (None, DEFAULT_MODEL_TYPE) else body.modelType
    base = body.checkpoint or model_type
    hyperparameters = {"epochs": body.epochs} if body.epochs is not None else {}
    try:
        req = JobCreate(version_id=version.id, base_model=base, hyperparameters=hyperparameters)
    except ValueError as exc:
        raise Unprocessable(str(exc)) from None
    job, _ = jobs.create(session, settings, tasks, publisher, workspace.id, req)
    return {"success": True, "job_id": str(job.id)}


# --- export -----------------------------------------------------------------------------------------------


def export_check(version: DatasetVersion, dataset: Dataset, export_format: str) -> bool:
    """True when the export can be downloaded now; False while the version is still being built (202)."""
    if export_format != EXPORT_FORMAT:
        raise AppError(f"format {export_format!r} is not exported here: samtune exports COCO ('coco'), the "
                       "layout of Roboflow's COCO export", status_code=400, source="format")  # fmt: skip
    if version.status == "failed":
        raise Conflict(f"version {version.number} of {dataset.slug!r} failed to build: {version.error}")
    return version.status == "ready"


def export_zip(storage: ObjectStorage, version: DatasetVersion) -> tuple[Iterator[bytes], int]:
    """The version as a COCO zip (train/valid/test with `_annotations.coco.json` beside the images) and its exact
    length: the SDK reads Content-Length before it downloads. Produced while it is sent, as the native export."""
    prefix = version.snapshot_prefix
    if version.status != "ready" or not prefix:
        raise Conflict(f"version {version.number} is {version.status}; only a ready version can be exported")
    # sized: each member's size is given, so the archive's length is known before a byte is sent.
    zs = ZipStream(compress_type=ZIP_STORED, sized=True)
    for key in storage.list(prefix):
        zs.add(iter_object(storage, key), key[len(prefix) :], size=storage.size(key))
    return iter(zs), len(zs)
