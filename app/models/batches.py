"""Batch prediction: a model over one split of a data version, written as COCO results JSON to storage. Run
by a worker on the `gpu` queue (worker/predictions.py is the Celery shell around `run_batch`)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from PIL import Image
from torch import Tensor

from app.core import lease
from app.core.db import make_engine, make_sessionmaker, transaction, utcnow
from app.core.queue import TaskQueue, enqueue_after_commit
from app.core.storage import ObjectStorage, make_storage
from app.core.tasks import PREDICT_VERSION
from app.metrics.series import PREDICTION_BATCH_SIZE
from app.models.masks import rle_json
from app.models.serving import ModelCache, serve_device
from app.models.tables import BatchPrediction, Model
from app.settings import Settings
from app.versions.snapshots import fetch_snapshot
from app.versions.tables import DatasetVersion
from trainer.base_model import load_base_model
from trainer.predict import Ask, Predictor

logger = logging.getLogger("samtune.worker.predictions")

# What COCO evaluation looks at: every detection (duplicate masks merged as the batch asked), best 100 per image.
PER_IMAGE = 100


def results_key(batch_id: uuid.UUID) -> str:
    return f"predictions/{batch_id}/results.json"


# Claimed with a lease like a training job: a worker killed mid-batch leaves the row `running` only until its
# lease expires; then the reaper sends it again, or fails it once MAX_ATTEMPTS workers were lost on it. A batch
# whose message was lost before any worker took it is sent again once it sat queued job_requeue_after_seconds.
LEASED = lease.Leased(
    BatchPrediction, waiting="queued", running="running", attempt=BatchPrediction.attempt,
    sent=BatchPrediction.enqueued_at,
)  # fmt: skip
MAX_ATTEMPTS = 3


def run_batch(settings: Settings, batch_id: uuid.UUID) -> str:
    """One attempt at the batch (or nothing, if it is not ours to run); its final status in a word."""
    engine = make_engine(settings.database_url)
    storage = make_storage(settings)
    factory = make_sessionmaker(engine)
    token = uuid.uuid4().hex
    duration = timedelta(seconds=settings.job_lease_seconds)
    try:
        with transaction(factory) as session:
            if not lease.claim(session, LEASED, batch_id, token, utcnow(), duration):
                return "not claimed"
            batch = session.get(BatchPrediction, batch_id)
            assert batch is not None
            session.refresh(batch)
            if not lease.may_start(batch.attempt, MAX_ATTEMPTS):  # a redelivery beat the reaper to it
                _end(batch, {"status": "failed", "error": _gave_up(batch.attempt)})
                return "failed"
            model = session.get(Model, batch.model_id)
            version = session.get(DatasetVersion, batch.version_id)
            assert model is not None and version is not None
            split, classes = batch.split, list(version.classes or [])
            nms = (batch.iou_threshold, batch.class_agnostic_nms)
        heartbeat = lease.Heartbeat(
            factory, LEASED, batch_id, token, duration, settings.job_heartbeat_seconds
        )
        with heartbeat:
            values = _predict(settings, storage, batch_id, model, version, split, classes, nms)
        with transaction(factory) as session:
            batch = lease.fenced(session, LEASED, batch_id, token)
            if batch is None:  # presumed dead and handed on: the newer attempt writes the outcome
                logger.warning("batch prediction %s: lease lost, outcome discarded", batch_id)
                return "lease lost"
            _end(batch, values)
        return str(values["status"])
    finally:
        engine.dispose()


def _predict(
    settings: Settings, storage: ObjectStorage, batch_id: uuid.UUID, model: Model, version: DatasetVersion,
    split: str, classes: list[str], nms: tuple[float, bool],
) -> dict[str, Any]:  # fmt: skip
    """The batch's outcome as column values; an error is reported, not retried (the same input would fail
    the same way)."""
    try:
        cache = ModelCache(
            storage, settings.data_dir / "cache" / "models", settings.model_cache_bytes, settings=settings
        )
        directory = cache.fetch(model.id, model.checkpoint_prefix, model.checkpoint_sha256)
        predictor = Predictor(load_base_model(str(directory)), serve_device())
        prompts = predictor.class_prompts(classes)  # what it was trained to answer; results keep the classes
        data = fetch_snapshot(storage, version, settings.data_dir / "cache" / "snapshots")
        coco = json.loads((data / split / "_annotations.coco.json").read_text())
        results = coco_results(predictor, data / split, coco["images"], prompts, nms, settings.batch_max_size)
        storage.put_bytes(results_key(batch_id), json.dumps(results).encode())
        return {"status": "succeeded", "num_images": len(coco["images"]), "num_detections": len(results),
                "result_key": results_key(batch_id)}  # fmt: skip
    except Exception as exc:
        logger.exception("batch prediction %s failed", batch_id)
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}


def coco_results(
    predictor: Predictor, folder: Path, images: list[dict[str, Any]], prompts: list[str],
    nms: tuple[float, bool], chunk_size: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """COCO results for `images` (COCO image entries, their files in `folder`), `chunk_size` images per
    batched forward (`Predictor.predict_many`); the same results as asking one image at a time."""
    results: list[dict[str, Any]] = []
    ahead = predictor.device.type == "cuda"
    for chunk, prepared in prepared_chunks(predictor, folder, images, chunk_size, ahead=ahead):
        try:
            asks = [Ask(picture, prompts, confidence=0.0, max_detections=PER_IMAGE, nms_iou=nms[0],
                        class_agnostic_nms=nms[1], pixels=pixels) for picture, pixels in prepared]  # fmt: skip
            PREDICTION_BATCH_SIZE.labels("batch").observe(len(asks))
            answers = predictor.predict_many(asks)
        finally:
            for picture, _ in prepared:
                picture.close()
        for img, found in zip(chunk, answers, strict=True):
            if isinstance(found, Exception):
                raise found
            results += [
                {"image_id": img["id"], "category_id": p.prompt_index + 1, "bbox": [round(v, 2) for v in p.bbox],
                 "score": round(p.score, 5), "segmentation": rle_json(p.rle)}
                for p in found
            ]  # fmt: skip
    return results


def prepared_chunks(
    predictor: Predictor, folder: Path, images: list[dict[str, Any]], chunk_size: int, *, ahead: bool
) -> Iterator[tuple[list[dict[str, Any]], list[tuple[Image.Image, Tensor]]]]:
    """Each chunk of `images` with its images decoded and resized (`_prepared`); at most two chunks' images
    are held at once (a split may hold thousands). `ahead` (coco_results: on a GPU): the next chunk is prepared
    on another thread while the caller runs this one's forward, since that CPU work (about 25 ms per image at
    SAM 3's 1008 px on an H200's host, bench/gpu_breakdown.py) would otherwise leave the device idle. On the CPU
    it would only compete with the forward for the same cores, so it runs in turn."""
    chunks = [images[i : i + chunk_size] for i in range(0, len(images), chunk_size)]
    if not ahead:
        for chunk in chunks:
            yield chunk, _prepared(predictor, folder, chunk)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="samtune-batch-decode") as loader:
        pending = loader.submit(_prepared, predictor, folder, chunks[0]) if chunks else None
        for n, chunk in enumerate(chunks):
            assert pending is not None
            prepared = pending.result()
            if n + 1 < len(chunks):
                pending = loader.submit(_prepared, predictor, folder, chunks[n + 1])
            yield chunk, prepared


def _prepared(
    predictor: Predictor, folder: Path, chunk: list[dict[str, Any]]
) -> list[tuple[Image.Image, Tensor]]:
    """A chunk's images decoded (each file closed once read) and resized for the model (`Predictor.prepare`)."""
    out = []
    for img in chunk:
        with Image.open(folder / img["file_name"]) as picture:
            rgb = picture.convert("RGB")
        out.append((rgb, predictor.prepare(rgb)))
    return out


def _end(batch: BatchPrediction, values: dict[str, Any]) -> None:
    for name, value in values.items():
        setattr(batch, name, value)
    batch.finished_at = utcnow()
    batch.lease_token = None
    batch.lease_expires_at = None


def _gave_up(attempts: int) -> str:
    return f"its worker stopped responding {attempts} times (killed, out of memory, or the machine was lost)"


def reap_stale_batches(settings: Settings, tasks: TaskQueue) -> list[str]:
    """Send again the batches whose worker went silent (lease expired); fail those out of attempts. Send again
    the batches that sat queued so long that their message must be lost (as the jobs reaper does)."""
    engine = make_engine(settings.database_url)
    sent: list[str] = []
    try:
        with transaction(make_sessionmaker(engine)) as session:
            now = utcnow()
            for expired in lease.reap(session, LEASED, now, max_attempts=lambda _: MAX_ATTEMPTS):
                batch = expired.row
                if not expired.retry:
                    _end(batch, {"status": "failed", "error": _gave_up(batch.attempt)})
                    continue
                batch.status = "queued"
                lease.sent(LEASED, batch, now)
                enqueue_after_commit(session, tasks, PREDICT_VERSION, [str(batch.id)])
                sent.append(str(batch.id))
            older = now - timedelta(seconds=settings.job_requeue_after_seconds)
            for batch in lease.forgotten(session, LEASED, older):
                lease.sent(LEASED, batch, now)
                enqueue_after_commit(session, tasks, PREDICT_VERSION, [str(batch.id)])
                sent.append(str(batch.id))
    finally:
        engine.dispose()
    return sent
