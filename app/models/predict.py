"""The predict pipeline: a request's image and options in, Roboflow-shaped predictions (or a PNG) out. The
model work runs on the cache's one inference thread (app/models/serving.py says why); that thread never
touches the database: what it needs of a model comes as a `Servable`, read in the request's session before."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request, Response
from PIL.Image import Image

from app.core.errors import Unprocessable
from app.images.decode import load_rgb
from app.models import draw, masks
from app.models.bodies import read_predict
from app.models.schemas import ImageSize, Point, PredictionOut, PredictOptions, PredictResponse
from app.models.serving import ModelCache, Served
from app.settings import Settings
from trainer.predict import DEFAULT_IOU_THRESHOLD

MASK_FORMATS = ("polygon", "rle")


@dataclass(frozen=True)
class Servable:
    """A model as prediction needs it, in plain values (no ORM object crosses to the inference thread)."""

    key: str  # its name in the cache
    classes: list[str]  # what it finds when no prompt is given; class_id is the index here
    files: Callable[[ModelCache], Path | str]  # its directory (or hub name), fetched on first use

    def load(self, cache: ModelCache) -> Served:
        """Blocking: the loaded model (loaded now unless it already is)."""
        return cache.get(self.key, lambda: self.files(cache))


def predict(
    cache: ModelCache, servable: Servable, image: Image, prompts: list[str] | None, *, confidence: float,
    max_detections: int, mask_format: str, boxes: list | None = None,
    iou_threshold: float | None = DEFAULT_IOU_THRESHOLD, class_agnostic_nms: bool = False,
) -> PredictResponse:  # fmt: skip
    """Blocking: call on the inference thread. One request per model at a time (the model's lock).

    Without `prompts` the model is asked for its classes with the prompts it was trained with (its card), and
    each prediction's `class` is the class name; prompts sent are asked as given and are the `class`."""
    classes = servable.classes
    if mask_format not in MASK_FORMATS:
        raise Unprocessable(f"mask_format must be one of {', '.join(MASK_FORMATS)}, not {mask_format!r}",
                            source="mask_format")  # fmt: skip
    for i, box in enumerate(boxes or []):
        if box[2] > image.width or box[3] > image.height:
            raise Unprocessable(f"boxes: box {i} {list(box)} leaves the {image.width}x{image.height} image",
                                source="boxes")  # fmt: skip
    asked_classes = prompts is None and not boxes  # Roboflow's habit: a model finds its own classes
    if prompts is None:
        prompts = []  # with exemplars alone: SAM 3's "visual" prompt
    else:
        prompts = [p.strip() for p in prompts if p and p.strip()]
        if not prompts:
            raise Unprocessable("prompts is empty: send at least one non-blank text prompt", source="prompts")
    if asked_classes and not classes:
        raise Unprocessable("this model has no classes: send at least one text prompt", source="prompts")
    started = time.perf_counter()
    served = servable.load(cache)
    if asked_classes:
        prompts = served.predictor.class_prompts(classes)
    with served.lock:
        found = served.predictor.predict(image, prompts, confidence=confidence, max_detections=max_detections,
                                         nms_iou=iou_threshold, class_agnostic_nms=class_agnostic_nms,
                                         boxes=[tuple(b) for b in boxes] if boxes else None)  # fmt: skip
    predictions = []
    for p in found:
        x, y, w, h = p.bbox
        name = classes[p.prompt_index] if asked_classes else p.prompt
        out = PredictionOut(
            x=x + w / 2, y=y + h / 2, width=w, height=h, confidence=round(p.score, 4), class_=name,
            class_id=classes.index(name) if name in classes else p.prompt_index,
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


def visualization(image: Image, result: PredictResponse, classes: list[str], mask_format: str) -> str:
    """What Roboflow's inference server answers in `visualization` when asked to `visualize_predictions`:
    the image with the predictions drawn (draw.overlay), base64 JPEG. `result` must hold RLE masks (drawing
    needs them); they are then given the `mask_format` the client asked for."""
    drawn = base64.b64encode(draw.overlay(image, result, classes, image_format="JPEG")).decode()
    if mask_format != "rle":
        for p in result.predictions:
            if p.rle is not None:
                p.points = [Point(x=px, y=py) for px, py in masks.polygon(p.rle)]
            p.rle = None
    return drawn


def _predict_to_bytes(
    cache: ModelCache, servable: Servable, data: bytes, options: PredictOptions, visualize: bool,
    max_pixels: int,
) -> tuple[bytes, str, str]:  # fmt: skip
    """Decode, predict and encode in one worker-thread hop: each hop to the thread pool and back costs about
    as much as the tiny model's post-processing, and the answer is serialised once (FastAPI would validate the
    response model again before serialising it). Returns (body, media type, Server-Timing header)."""
    t0 = time.perf_counter()
    picture = load_rgb(data, max_pixels=max_pixels)
    t1 = time.perf_counter()
    result = predict(
        cache, servable, picture, options.prompts, confidence=options.confidence,
        max_detections=options.max_detections, mask_format="rle" if visualize else options.mask_format,
        boxes=options.boxes, iou_threshold=options.iou_threshold, class_agnostic_nms=options.class_agnostic_nms,
    )  # fmt: skip
    t2 = time.perf_counter()
    if visualize:
        body, media = draw.overlay(picture, result, servable.classes), "image/png"
    else:
        body, media = result.model_dump_json(by_alias=True).encode(), "application/json"
    t3 = time.perf_counter()
    timing = f"decode;dur={(t1 - t0) * 1e3:.2f}, predict;dur={(t2 - t1) * 1e3:.2f}, encode;dur={(t3 - t2) * 1e3:.2f}"
    return body, media, timing


async def answer(request: Request, settings: Settings, servable: Servable, visualize: bool) -> Response:
    """What both native predict routes answer: read the request, then decode, predict with `servable` and
    encode JSON or a PNG on the inference thread."""
    data, options = await read_predict(request, settings, visualize=visualize)
    cache: ModelCache = request.app.state.model_cache
    body, media, timing = await cache.run(
        _predict_to_bytes, cache, servable, data, options, visualize, settings.max_image_pixels
    )
    return Response(body, media_type=media, headers={"Server-Timing": timing})
