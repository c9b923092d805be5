"""Batch prediction: a model over one split of a data version, written as COCO results JSON to storage."""

from __future__ import annotations

import json
import logging
import uuid

from celery import shared_task
from PIL import Image
from sqlalchemy import update

from app.core.db import make_engine, make_sessionmaker, transaction, utcnow
from app.core.storage import make_storage
from app.models.masks import rle_json
from app.models.serving import ModelCache, serve_device
from app.models.tables import BatchPrediction, Model
from app.settings import Settings
from app.versions.tables import DatasetVersion
from trainer.model import load_base_model
from trainer.predict import Predictor
from worker.training import fetch_snapshot

logger = logging.getLogger("samtune.worker.predictions")

PREDICT_VERSION_TASK = "samtune.predict_version"
# What COCO evaluation looks at: every detection, best 100 per image.
PER_IMAGE = 100


def results_key(batch_id: uuid.UUID) -> str:
    return f"predictions/{batch_id}/results.json"


def run_batch(settings: Settings, batch_id: uuid.UUID) -> str:
    engine = make_engine(settings.database_url)
    storage = make_storage(settings)
    factory = make_sessionmaker(engine)
    try:
        with transaction(factory) as session:
            claimed = session.execute(
                update(BatchPrediction)
                .where(BatchPrediction.id == batch_id, BatchPrediction.status == "queued")
                .values(status="running")
            ).rowcount  # type: ignore[attr-defined]
            if not claimed:
                return "not claimed"
            batch = session.get(BatchPrediction, batch_id)
            model = session.get(Model, batch.model_id) if batch else None
            version = session.get(DatasetVersion, batch.version_id) if batch else None
            assert batch is not None and model is not None and version is not None
            split, classes = batch.split, list(version.classes or [])
        try:
            cache = ModelCache(storage, settings.data_dir / "cache" / "models", settings.model_cache_bytes)
            directory = cache.fetch(model.id, model.checkpoint_key, model.checkpoint_sha256)
            predictor = Predictor(load_base_model(str(directory)), serve_device())
            data = fetch_snapshot(storage, version, settings.data_dir / "cache" / "snapshots")
            coco = json.loads((data / split / "_annotations.coco.json").read_text())
            results = []
            for img in coco["images"]:
                with Image.open(data / split / img["file_name"]) as picture:
                    found = predictor.predict(picture.convert("RGB"), classes, confidence=0.0,
                                              max_detections=PER_IMAGE)  # fmt: skip
                results += [
                    {"image_id": img["id"], "category_id": p.prompt_index + 1, "bbox": [round(v, 2) for v in p.bbox],
                     "score": round(p.score, 5), "segmentation": rle_json(p.rle)}
                    for p in found
                ]  # fmt: skip
            storage.put_bytes(results_key(batch_id), json.dumps(results).encode())
            values = {"status": "succeeded", "num_images": len(coco["images"]), "num_detections": len(results),
                      "result_key": results_key(batch_id)}  # fmt: skip
        except Exception as exc:  # reported on the row, not retried: the same input would fail the same way
            logger.exception("batch prediction %s failed", batch_id)
            values = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        with transaction(factory) as session:
            session.execute(
                update(BatchPrediction)
                .where(BatchPrediction.id == batch_id)
                .values(**values, finished_at=utcnow())
            )
        return str(values["status"])
    finally:
        engine.dispose()


@shared_task(name=PREDICT_VERSION_TASK, bind=True)
def predict_version_task(self, batch_id: str) -> str:  # type: ignore[no-untyped-def]
    return run_batch(self.app.conf.samtune_settings, uuid.UUID(batch_id))
