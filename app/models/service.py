"""Models: read, download, delete, predict."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from zipstream import ZIP_DEFLATED, ZipStream

from app.core.db import after_commit
from app.core.errors import Conflict, NotFound, Unprocessable
from app.core.queue import TaskQueue, enqueue_after_commit
from app.core.storage import ObjectStorage, iter_object
from app.core.tasks import PREDICT_VERSION
from app.datasets.tables import Dataset
from app.jobs.tables import TrainingJob
from app.models import masks
from app.models.schemas import ImageSize, ModelOut, Point, PredictionOut, PredictResponse
from app.models.serving import ModelCache
from app.models.tables import BatchPrediction, Model
from app.versions import service as versions
from app.versions.tables import DatasetVersion

MASK_FORMATS = ("polygon", "rle")


class ModelNotFound(NotFound):
    def __init__(self, model_id: uuid.UUID) -> None:
        super().__init__(f"model {model_id} not found in this workspace")


Row = tuple[Model, TrainingJob, DatasetVersion, Dataset]


def _query():  # type: ignore[no-untyped-def]
    return (
        select(Model, TrainingJob, DatasetVersion, Dataset)
        .join(TrainingJob, TrainingJob.id == Model.job_id)
        .join(DatasetVersion, DatasetVersion.id == TrainingJob.version_id)
        .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
    )


def get(session: Session, workspace_id: uuid.UUID, model_id: uuid.UUID) -> Row:
    row = session.execute(
        _query().where(Model.id == model_id, Model.workspace_id == workspace_id)
    ).one_or_none()
    if row is None:
        raise ModelNotFound(model_id)
    return row[0], row[1], row[2], row[3]


def list_models(session: Session, workspace_id: uuid.UUID) -> list[Row]:
    stmt = _query().where(Model.workspace_id == workspace_id).order_by(Model.created_at.desc())
    return [(r[0], r[1], r[2], r[3]) for r in session.execute(stmt)]


def describe(model: Model, job: TrainingJob, version: DatasetVersion, dataset: Dataset) -> ModelOut:
    results = model.eval_results or {}
    return ModelOut(
        id=model.id,
        name=model.name,
        job_id=job.id,
        version_id=version.id,
        base_model=job.base_model,
        base_model_description=job.base_model_description or job.base_model,
        mode=str((job.hyperparameters or {}).get("mode", {}).get("value", job.mode)),
        classes=list(version.classes or []),
        hyperparameters=job.hyperparameters or {},
        test_metrics={k: results.get(k) for k in ("base", "fine_tuned")},
        checkpoint_sha256=model.checkpoint_sha256,
        status=model.status,
        created_at=model.created_at,
    )


def download_stream(storage: ObjectStorage, model: Model) -> Iterator[bytes]:
    """The model directory (what Sam3Model.from_pretrained loads, with processor files and card), zipped
    while it is sent."""
    prefix = model.checkpoint_key.rstrip("/") + "/"
    zs = ZipStream(compress_type=ZIP_DEFLATED)
    for key in storage.list(prefix):
        zs.add(iter_object(storage, key), key[len(prefix) :])
    return iter(zs)


def delete(session: Session, storage: ObjectStorage, cache: ModelCache, workspace_id: uuid.UUID,
           model_id: uuid.UUID) -> None:  # fmt: skip
    model, _, _, _ = get(session, workspace_id, model_id)
    busy = session.scalar(
        select(BatchPrediction.id).where(
            BatchPrediction.model_id == model.id, BatchPrediction.status.in_(("queued", "running"))
        )
    )
    if busy is not None:
        raise Conflict(f"model {model.name} is in use by batch prediction {busy}; delete it once that ends")
    prefix = model.checkpoint_key.rstrip("/") + "/"
    session.delete(model)
    session.flush()
    after_commit(session, lambda: (storage.delete_prefix(prefix), cache.evict(str(model_id))))


def predict(
    cache: ModelCache, model: Model, image, prompts: list[str] | None, *, confidence: float,  # type: ignore[no-untyped-def]
    max_detections: int, mask_format: str, classes: list[str], boxes: list | None = None,
) -> PredictResponse:  # fmt: skip
    """A fine-tuned model's prediction (blocking: call from a worker thread)."""
    return predict_with(
        cache, str(model.id), lambda: cache.fetch(model.id, model.checkpoint_key, model.checkpoint_sha256), image,
        prompts, confidence=confidence, max_detections=max_detections, mask_format=mask_format, classes=classes,
        boxes=boxes,
    )  # fmt: skip


def predict_with(
    cache: ModelCache, key: str, locate, image, prompts: list[str] | None, *, confidence: float,  # type: ignore[no-untyped-def]
    max_detections: int, mask_format: str, classes: list[str], boxes: list | None = None,
) -> PredictResponse:  # fmt: skip
    """Blocking: call from a worker thread. One request per model at a time (the model's lock)."""
    if mask_format not in MASK_FORMATS:
        raise Unprocessable(f"mask_format must be one of {', '.join(MASK_FORMATS)}, not {mask_format!r}",
                            source="mask_format")  # fmt: skip
    for i, box in enumerate(boxes or []):
        if box[2] > image.width or box[3] > image.height:
            raise Unprocessable(f"boxes: box {i} {list(box)} leaves the {image.width}x{image.height} image",
                                source="boxes")  # fmt: skip
    if prompts is None and boxes:
        prompts = []  # exemplars alone: SAM 3's "visual" prompt
    elif prompts is None:
        prompts = classes  # Roboflow's habit: a model finds its own classes unless asked otherwise
    else:
        prompts = [p.strip() for p in prompts if p and p.strip()]
        if not prompts:
            raise Unprocessable("prompts is empty: send at least one non-blank text prompt", source="prompts")
    if not prompts and not boxes:
        raise Unprocessable("this model has no classes: send at least one text prompt", source="prompts")
    started = time.perf_counter()
    served = cache.get(key, locate)
    with served.lock:
        found = served.predictor.predict(image, prompts, confidence=confidence, max_detections=max_detections,
                                         boxes=[tuple(b) for b in boxes] if boxes else None)  # fmt: skip
    predictions = []
    for p in found:
        x, y, w, h = p.bbox
        out = PredictionOut(
            x=x + w / 2, y=y + h / 2, width=w, height=h, confidence=round(p.score, 4), class_=p.prompt,
            class_id=classes.index(p.prompt) if p.prompt in classes else p.prompt_index,
            detection_id=str(uuid.uuid4()),
        )  # fmt: skip
        if mask_format == "rle":
            out.rle = masks.rle_json(p.rle)
        else:
            out.points = [Point(x=px, y=py) for px, py in masks.polygon(p.rle)]
        predictions.append(out)
    return PredictResponse(
        inference_id=str(uuid.uuid4()),
        time=round(time.perf_counter() - started, 4),
        image=ImageSize(width=image.width, height=image.height),
        predictions=predictions,
    )


def model_prefix(model_id: uuid.UUID) -> str:
    return f"models/{model_id}"


def register_model(
    session: Session,
    job: TrainingJob,
    model_id: uuid.UUID,
    checkpoint_sha256: str,
    eval_results: dict[str, Any],
) -> Model:
    """The model a job produced, once its files are under `model_prefix(model_id)`: named after the data
    version it learned from. The caller holds the job's lease (a stale attempt registers nothing)."""
    version = session.get(DatasetVersion, job.version_id)
    assert version is not None
    dataset = session.get(Dataset, version.dataset_id)
    assert dataset is not None
    model = Model(
        id=model_id,
        workspace_id=job.workspace_id,
        job_id=job.id,
        name=f"{dataset.slug}/{version.number}",
        checkpoint_key=model_prefix(model_id),
        checkpoint_sha256=checkpoint_sha256,
        eval_results=eval_results,
    )
    session.add(model)
    return model


def create_batch(session: Session, tasks: TaskQueue, workspace_id: uuid.UUID, model_id: uuid.UUID,
                 version_id: uuid.UUID, split: str) -> BatchPrediction:  # fmt: skip
    model, _, _, _ = get(session, workspace_id, model_id)
    version, dataset = versions.ready_version(session, workspace_id, version_id)
    images = int(((version.split_counts or {}).get(split) or {}).get("images", 0))
    if not images:
        raise Unprocessable(
            f"version {dataset.slug}/{version.number} has no {split!r} images", source="split"
        )
    batch = BatchPrediction(workspace_id=workspace_id, model_id=model.id, version_id=version.id, split=split,
                            status="queued")  # fmt: skip
    session.add(batch)
    session.flush()
    enqueue_after_commit(session, tasks, PREDICT_VERSION, [str(batch.id)])
    return batch


def get_batch(session: Session, workspace_id: uuid.UUID, batch_id: uuid.UUID) -> BatchPrediction:
    batch = session.scalars(
        select(BatchPrediction).where(
            BatchPrediction.id == batch_id, BatchPrediction.workspace_id == workspace_id
        )
    ).first()
    if batch is None:
        raise NotFound(f"batch prediction {batch_id} not found in this workspace")
    return batch
