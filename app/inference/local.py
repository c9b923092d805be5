"""Predictions computed in this process: models in a `ModelCache` on this process's device, requests for the
same model gathered by a `DynamicBatcher` into one `Predictor.predict_many` call on the one inference thread.

An inference service runs this; so does an API configured with no service (the embedded default before
`samtune up` grew one, and the tests). Only model work runs on the inference thread: decoding, checking and
resizing the image before it, building and encoding the answer after it, run on the thread pool, while the
next batch computes; for a small image and a small model, on the event loop, where they cost less than the
trips to the pool."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

from PIL.Image import Image
from starlette.concurrency import run_in_threadpool
from torch import Tensor

from app.core.storage import ObjectStorage
from app.images.decode import image_size, load_rgb
from app.inference.calls import Answer, ModelSpec, PredictCall
from app.jobs import base_models
from app.metrics.series import PREDICTION_BATCH_SIZE, PREDICTION_DURATION
from app.models import predict
from app.models.batching import DynamicBatcher
from app.models.serving import ModelCache, ModelUnavailable, Served, serve_device
from app.settings import Settings
from trainer.predict import Ask, Prediction

# At most this many pixels (the image's and the model's input's together) are decoded, resized and answered on
# the event loop itself; larger requests go through the thread pool (`LocalInference._cheap`).
INLINE_PIXELS = 512 * 512
# ... and an answer of at most this many instances is encoded there (each is a mask turned into a polygon or RLE).
INLINE_PREDICTIONS = 16


@dataclass(frozen=True)
class _Item:
    call: PredictCall
    image: Image
    image_key: str  # the image's sha256: a repeated image reuses its vision embedding
    pixels: Tensor | None  # the image resized for the model (`Predictor.prepare`), when it was loaded already


@dataclass(frozen=True)
class _Found:
    predictions: list[Prediction]
    reused_embedding: bool
    batch_size: int
    forward_s: float  # the batch's `predict_many`, on the inference thread


class LocalInference:
    def __init__(self, settings: Settings, storage: ObjectStorage) -> None:
        self.settings = settings
        self.cache = ModelCache(
            storage,
            settings.data_dir / "cache" / "models",
            settings.model_cache_bytes,
            serve_device(settings.inference_device),
            settings=settings,
        )
        self.batcher: DynamicBatcher[_Item, _Found] = DynamicBatcher(
            self._run,
            self.cache.executor,
            max_batch=settings.batch_max_size,
            max_wait_s=settings.batch_max_wait_ms / 1000,
        )

    def files(self, model: ModelSpec) -> Path | str:
        """Blocking: where the model's files are; a fine-tuned model's are fetched from storage once."""
        if model.base_name is not None:
            base = base_models.resolve(self.settings, model.base_name)
            if base.download:  # serving never downloads: a 3.4 GB fetch would hold the request for minutes
                raise ModelUnavailable(
                    f"base model {base.name!r} is not downloaded yet: the first training job that uses it "
                    f"downloads it, or run `hf download {base.name}` where this service runs"
                )
            assert base.location is not None  # resolve refuses an unavailable model
            return base.location
        assert model.model_id is not None and model.prefix is not None and model.sha256 is not None
        return self.cache.fetch(model.model_id, model.prefix, model.sha256)

    def served(self, model: ModelSpec) -> Served:
        """Blocking: the loaded model (loaded now, once, unless it already is)."""
        return self.cache.get(model.key, lambda: self.files(model))

    async def load(self, model: ModelSpec) -> None:
        await self.cache.run(self.served, model)

    def evict(self, key: str) -> None:
        self.cache.evict(key)

    async def aclose(self) -> None:
        """Nothing to close: the inference thread may still be asked by another app sharing this object."""

    async def predict(self, call: PredictCall, data: bytes) -> Answer:
        t0 = time.perf_counter()
        inline = self._cheap(call, data)
        item = self._decode(call, data) if inline else await run_in_threadpool(self._decode, call, data)
        t1 = time.perf_counter()
        found = await self.batcher.submit(call.model.key, item)
        t2 = time.perf_counter()
        if inline and len(found.predictions) <= INLINE_PREDICTIONS:
            body, media = self._encode(item.call, item.image, found, t2 - t1)
        else:
            body, media = await run_in_threadpool(self._encode, item.call, item.image, found, t2 - t1)
        t3 = time.perf_counter()
        PREDICTION_DURATION.observe(t3 - t0)
        embedding = "reused" if found.reused_embedding else "computed"
        timing = (
            f"decode;dur={(t1 - t0) * 1e3:.2f}, predict;dur={(t2 - t1) * 1e3:.2f}, "
            f"encode;dur={(t3 - t2) * 1e3:.2f}, forward;dur={found.forward_s * 1e3:.2f}, "
            f"batch;desc={found.batch_size}, embedding;desc={embedding}"
        )
        return Answer(body, media, timing)

    def _cheap(self, call: PredictCall, data: bytes) -> bool:
        """Whether decoding this image (and resizing it for the model) and encoding its answer cost less than
        the two trips through the thread pool that would keep them off the event loop: a small image, for a
        model that takes small ones. SAM 3's 1008 px resize never is (tens of milliseconds); the bundled
        model's 112 px request is, and inline it answered 0.7-1.7 ms sooner at p50 (bench/RESULTS.md)."""
        width, height = image_size(data, max_pixels=self.settings.max_image_pixels)
        served = self.cache.peek(call.model.key)
        side = served.predictor.loaded.image_size if served is not None else 0
        return width * height + side * side <= INLINE_PIXELS

    @staticmethod
    def _encode(call: PredictCall, image: Image, found: _Found, seconds: float) -> tuple[bytes, str]:
        return predict.encode(call, image, predict.respond(call, image, found.predictions, seconds))

    def _decode(self, call: PredictCall, data: bytes) -> _Item:
        """On the thread pool, in parallel across requests: decoding, checking, and the model's resize, which
        at SAM 3's 1008 px costs tens of milliseconds of CPU per image that the inference thread, feeding the
        GPU one batch after another, should not spend (bench/gpu_breakdown.py)."""
        image = load_rgb(data, max_pixels=self.settings.max_image_pixels)
        call = predict.check(call, image)
        key = hashlib.sha256(data).hexdigest()
        served = self.cache.peek(call.model.key)
        pixels = None
        if served is not None and not served.predictor.has_embedding(key):
            pixels = served.predictor.prepare(image)
        return _Item(call, image, key, pixels)

    def _run(self, _key: Hashable, items: list[_Item]) -> list[_Found | BaseException]:
        """On the inference thread: one batch of requests for one model."""
        PREDICTION_BATCH_SIZE.labels("online").observe(len(items))
        served = self.served(items[0].call.model)
        asks = []
        for item in items:
            o = item.call.options
            prompts = (
                served.predictor.class_prompts(item.call.model.classes)
                if predict.asks_classes(o)
                else list(o.prompts or [])
            )
            boxes = [(b[0], b[1], b[2], b[3]) for b in o.boxes] if o.boxes else None
            asks.append(Ask(item.image, prompts, o.confidence, o.max_detections, o.iou_threshold,
                            o.class_agnostic_nms, boxes, item.image_key, item.pixels))  # fmt: skip
        with served.lock:
            reused = [served.predictor.has_embedding(item.image_key) for item in items]
            t = time.perf_counter()
            results = served.predictor.predict_many(asks)
            forward = time.perf_counter() - t
        return [
            r if isinstance(r, BaseException) else _Found(r, was, len(items), forward)
            for r, was in zip(results, reused, strict=True)
        ]
