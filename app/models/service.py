"""Models: read (by id, or by Roboflow's `slug/version` id), describe, download, delete; what a prediction
needs of one (a `Servable`); the model a job registers; batch predictions asked for."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import Session
from zipstream import ZIP_DEFLATED, ZipStream

from app.core.db import after_commit, utcnow
from app.core.errors import Conflict, NotFound, Unprocessable
from app.core.pagination import PageParams
from app.core.queue import TaskQueue, enqueue_after_commit
from app.core.storage import ObjectStorage, iter_object
from app.core.tasks import PREDICT_VERSION
from app.datasets.tables import Dataset
from app.inference.calls import ModelSpec
from app.jobs import base_models
from app.jobs.feed import Publisher
from app.jobs.schemas import BaseVsFineTuned
from app.jobs.service import record
from app.jobs.tables import TrainingJob
from app.models import repository
from app.models.assembly import DELTA_CARD
from app.models.repository import Row
from app.models.schemas import BatchPredictionOut, ModelOut
from app.models.serving import ModelCache
from app.models.tables import BatchPrediction, Model
from app.settings import Settings
from app.versions import service as versions
from app.versions.tables import DatasetVersion
from trainer.predict import DEFAULT_IOU_THRESHOLD


class ModelNotFound(NotFound):
    def __init__(self, model_id: uuid.UUID) -> None:
        super().__init__(f"model {model_id} not found in this workspace")


def get(session: Session, workspace_id: uuid.UUID, model_id: uuid.UUID) -> Row:
    found = repository.get(session, workspace_id, model_id)
    if found is None:
        raise ModelNotFound(model_id)
    return found


def page_models(session: Session, workspace_id: uuid.UUID, params: PageParams) -> tuple[list[Row], int]:
    return repository.page_newest_first(session, workspace_id, params)


def by_reference(session: Session, workspace_id: uuid.UUID, reference: str) -> Row:
    """A model by its Roboflow-style id (`slug/version`: the newest model trained on that version) or its UUID."""
    slug, _, number = reference.partition("/")
    try:
        if not number:
            found = repository.get(session, workspace_id, uuid.UUID(reference))
        # Version numbers are 32-bit in the database: a larger one failed there (500) instead of matching nothing.
        elif not 0 < int(number) < 2**31:
            raise ValueError(number)
        else:
            found = repository.newest_for_version(session, workspace_id, slug, int(number))
    except ValueError:
        raise NotFound(
            f"model {reference!r} not found: use '{{dataset slug}}/{{version number}}' or a model id"
        ) from None
    if found is None and number:
        regressed = repository.regressions_for_version(session, workspace_id, slug, int(number))
        if regressed:
            raise NotFound(_only_regressions(reference, regressed))
    if found is None:
        raise NotFound(f"model {reference!r} not found in this workspace")
    return found


def _only_regressions(reference: str, models: list[Model]) -> str:
    """Why `slug/N` names no model: its models all scored below their base; how to serve one anyway."""
    newest = models[0]
    figures = regression_figures(newest.eval_results)
    scores = f" (mask AP {figures[1]:.3f}, its base {figures[0]:.3f})" if figures else ""
    which = (
        "the only model of that version"
        if len(models) == 1
        else f"each of the {len(models)} models of that version"
    )
    return (
        f"model {reference!r} not found: {which} scored below its base model on the test split, so none is "
        f"served by that name. The newest is {newest.id}{scores}; to serve it anyway, promote it: "
        f"POST /api/v1/models/{newest.id}/promote, or the Promote button on its page"
    )


def regression_figures(eval_results: dict[str, Any] | None) -> tuple[float, float] | None:
    """(base, fine-tuned) mask AP on the test split, where both were evaluated."""
    test = (eval_results or {}).get("test") or {}
    base, tuned = test.get("base"), test.get("fine_tuned")
    if not base or not tuned:
        return None
    try:
        return float(base["summary"]["segm_AP"]), float(tuned["summary"]["segm_AP"])
    except (KeyError, TypeError, ValueError):
        return None


def is_regression(eval_results: dict[str, Any] | None) -> bool:
    """The fine-tuned model scored below its base on the test split (mask AP); False where either was not
    evaluated (nothing to compare)."""
    figures = regression_figures(eval_results)
    return figures is not None and figures[1] < figures[0]


def promote(session: Session, workspace_id: uuid.UUID, model_id: uuid.UUID) -> Row:
    """Make the model its version's `slug/N` model explicitly, a regression or not (until a newer model is
    registered that did not regress, or another is promoted). Promoting it again moves nothing else."""
    row = get(session, workspace_id, model_id)
    row[0].promoted_at = utcnow()
    session.flush()
    return row


def version_names(session: Session, workspace_id: uuid.UUID) -> list[str]:
    """The version names of the workspace's models (their Roboflow-style ids), oldest first, each once."""
    return repository.version_names_oldest_first(session, workspace_id)


def describe(model: Model, job: TrainingJob, version: DatasetVersion, dataset: Dataset) -> ModelOut:
    results = model.eval_results or {}
    test = results.get("test") or {}
    resolved_mode = str((job.hyperparameters or {}).get("mode", {}).get("value", job.mode))
    return ModelOut(
        id=model.id,
        version_name=model.version_name,
        job_id=job.id,
        version_id=version.id,
        base_model=job.base_model,
        base_model_description=job.base_model_description or job.base_model,
        base_model_id=job.base_model_id,
        lineage=list(job.base_lineage or [job.base_model]),
        requested_mode=job.mode,
        resolved_mode=resolved_mode,
        classes=list(version.classes or []),
        hyperparameters=job.hyperparameters or {},
        best_valid=results.get("best_valid"),
        test=BaseVsFineTuned(base=test.get("base"), fine_tuned=test.get("fine_tuned")),
        name=model.version_name,
        mode=resolved_mode,
        test_metrics={k: test.get(k) for k in ("base", "fine_tuned")},
        checkpoint_sha256=model.checkpoint_sha256,
        status=model.status,
        regression=bool(model.regression),
        promoted=model.promoted_at is not None,
        promoted_at=model.promoted_at,
        created_at=model.created_at,
    )


def model_spec(model: Model, version: DatasetVersion) -> ModelSpec:
    """A fine-tuned model as the inference tier loads it: its stored files (checked against their sha256)."""
    return ModelSpec(
        key=str(model.id),
        classes=list(version.classes or []),
        model_id=model.id,
        prefix=model.checkpoint_prefix,
        sha256=model.checkpoint_sha256,
    )


def base_spec(settings: Settings, name: str) -> ModelSpec:
    """A base model for zero-shot prediction; its default prompts are the classes its card lists, if any."""
    base = base_models.resolve(settings, name)
    return ModelSpec(key=f"base:{base.name}", classes=base_models.classes(base), base_name=base.name)


def download_stream(
    storage: ObjectStorage, model: Model, settings: Settings | None = None
) -> Iterator[bytes]:
    """The model directory (what Sam3Model.from_pretrained loads, with processor files and card), zipped
    while it is sent. A model stored whole is streamed from storage; one stored as a delta over its base is
    first assembled into the model cache (app/models/assembly.py, through ModelCache.fetch like every other
    use), so a missing or changed base is an error before the response starts, never a wrong model."""
    prefix = model.checkpoint_prefix.rstrip("/") + "/"
    zs = ZipStream(compress_type=ZIP_DEFLATED)
    if not storage.exists(prefix + DELTA_CARD):
        for key in storage.list(prefix):
            zs.add(iter_object(storage, key), key[len(prefix) :])
        return iter(zs)
    # The model cache when the settings are given; else (the route does not pass them yet) a folder of its own
    # for this download, removed once the zip has been sent.
    scratch = None if settings is not None else Path(tempfile.mkdtemp(prefix="samtune-download-"))
    cache_dir = scratch or (settings or Settings()).data_dir / "cache" / "models"
    cache = ModelCache(storage, cache_dir, (settings or Settings()).model_cache_bytes, torch.device("cpu"),
                       settings=settings)  # fmt: skip
    try:
        directory = cache.fetch(model.id, model.checkpoint_prefix, model.checkpoint_sha256)
        for path in sorted(directory.rglob("*")):
            if path.is_file() and path.name != ".complete":
                zs.add_path(str(path), path.relative_to(directory).as_posix())
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    return _then_remove(iter(zs), scratch)


def _then_remove(chunks: Iterator[bytes], scratch: Path | None) -> Iterator[bytes]:
    try:
        yield from chunks
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def delete(session: Session, storage: ObjectStorage, evict: Callable[[str], None], workspace_id: uuid.UUID,
           model_id: uuid.UUID) -> None:  # fmt: skip
    model, _, _, _ = get(session, workspace_id, model_id)
    busy = repository.active_batch(session, model.id)
    if busy is not None:
        raise Conflict(
            f"model {model.version_name} is in use by batch prediction {busy}; delete it once that ends"
        )
    prefix = model.checkpoint_prefix.rstrip("/") + "/"
    session.delete(model)
    session.flush()

    def drop_files() -> None:
        storage.delete_prefix(prefix)
        evict(str(model_id))

    after_commit(session, drop_files)


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
    version it learned from, and marked a regression where it scored below its base on the test split. The
    caller holds the job's lease (a stale attempt registers nothing)."""
    version = session.get(DatasetVersion, job.version_id)
    assert version is not None
    dataset = session.get(Dataset, version.dataset_id)
    assert dataset is not None
    model = Model(
        id=model_id,
        workspace_id=job.workspace_id,
        job_id=job.id,
        version_name=versions.version_name(dataset, version),
        checkpoint_prefix=model_prefix(model_id),
        checkpoint_sha256=checkpoint_sha256,
        eval_results=eval_results,
        regression=is_regression(eval_results),
    )
    session.add(model)
    return model


REGRESSION = "regression"  # the job event of a model that scored below its base


def record_regression(session: Session, publisher: Publisher, job: TrainingJob, model: Model) -> None:
    """The job's event saying its model scored below its base on the test split, with both figures."""
    figures = regression_figures(model.eval_results)
    assert figures is not None
    base, tuned = figures
    message = (
        f"model {model.id} scored below its base model on the test split (mask AP {tuned:.3f} vs {base:.3f}): "
        f"'{model.version_name}' keeps naming the previous model; promote this one to serve it by that name"
    )
    data = {"model_id": str(model.id), "metric": "segm_AP", "base": base, "fine_tuned": tuned}
    record(session, publisher, job, REGRESSION, message, data)


def create_batch(session: Session, tasks: TaskQueue, workspace_id: uuid.UUID, model_id: uuid.UUID,
                 version_id: uuid.UUID, split: str, *, iou_threshold: float = DEFAULT_IOU_THRESHOLD,
                 class_agnostic_nms: bool = False) -> BatchPrediction:  # fmt: skip
    model, _, _, _ = get(session, workspace_id, model_id)
    version, dataset = versions.ready_version(session, workspace_id, version_id)
    images = int(((version.split_counts or {}).get(split) or {}).get("images", 0))
    if not images:
        raise Unprocessable(
            f"version {versions.version_name(dataset, version)} has no {split!r} images", source="split"
        )
    batch = BatchPrediction(workspace_id=workspace_id, model_id=model.id, version_id=version.id, split=split,
                            status="queued", iou_threshold=iou_threshold,
                            class_agnostic_nms=class_agnostic_nms)  # fmt: skip
    session.add(batch)
    session.flush()
    enqueue_after_commit(session, tasks, PREDICT_VERSION, [str(batch.id)])
    return batch


def get_batch(session: Session, workspace_id: uuid.UUID, batch_id: uuid.UUID) -> BatchPrediction:
    batch = repository.get_batch(session, workspace_id, batch_id)
    if batch is None:
        raise NotFound(f"batch prediction {batch_id} not found in this workspace")
    return batch


def page_batches(
    session: Session, workspace_id: uuid.UUID, params: PageParams, *, model_id: uuid.UUID | None = None
) -> tuple[list[BatchPrediction], int]:
    return repository.page_batches(session, workspace_id, params, model_id=model_id)


def describe_batch(batch: BatchPrediction, results_url: str) -> BatchPredictionOut:
    """The batch as the API shows it; `results_url` only once there are results."""
    return BatchPredictionOut(
        id=batch.id, model_id=batch.model_id, version_id=batch.version_id, split=batch.split, status=batch.status,
        num_images=batch.num_images, num_detections=batch.num_detections, error=batch.error,
        iou_threshold=batch.iou_threshold, class_agnostic_nms=batch.class_agnostic_nms,
        results_url=results_url if batch.status == "succeeded" else None,
        created_at=batch.created_at, finished_at=batch.finished_at,
    )  # fmt: skip


def batch_results_key(session: Session, workspace_id: uuid.UUID, batch_id: uuid.UUID) -> str:
    """Where a finished batch's COCO results JSON is stored; Conflict until it has succeeded."""
    batch = get_batch(session, workspace_id, batch_id)
    if batch.status != "succeeded" or not batch.result_key:
        raise Conflict(
            f"batch prediction {batch_id} is {batch.status}" + (f": {batch.error}" if batch.error else "")
        )
    return batch.result_key
