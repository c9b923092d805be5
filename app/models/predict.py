"""The predict pipeline's two ends, around the model's forward (app/inference/local.py runs the forward): what
a request asks, checked against its image before it waits for the model, and the answer it gets, encoded as
the route promised (native JSON, a PNG, or Roboflow's JSON)."""

from __future__ import annotations

import base64
import json
import uuid

from fastapi import Request, Response
from PIL.Image import Image

from app.core.errors import Unprocessable
from app.inference.calls import ModelSpec, PredictCall
from app.models import draw, masks
from app.models.bodies import read_predict
from app.models.schemas import ImageSize, Point, PredictionOut, PredictOptions, PredictResponse
from app.settings import Settings
from trainer.predict import Prediction


def asks_classes(options: PredictOptions) -> bool:
    """Roboflow's habit: without prompts (and without exemplar boxes) a model finds its own classes."""
    return options.prompts is None and not options.boxes


def check(call: PredictCall, image: Image) -> PredictCall:
    """The call as the model is asked it: prompts stripped of blanks; a 422 for what cannot be asked of this
    image or model. With exemplar boxes alone the prompt is SAM 3's own "visual"."""
    options = call.options
    for i, box in enumerate(options.boxes or []):
        if box[2] > image.width or box[3] > image.height:
            raise Unprocessable(f"boxes: box {i} {list(box)} leaves the {image.width}x{image.height} image",
                                source="boxes")  # fmt: skip
    if options.prompts is not None:
        prompts = [p.strip() for p in options.prompts if p and p.strip()]
        if not prompts:
            raise Unprocessable("prompts is empty: send at least one non-blank text prompt", source="prompts")
        call = call.model_copy(update={"options": options.model_copy(update={"prompts": prompts})})
    if asks_classes(call.options) and not call.model.classes:
        raise Unprocessable("this model has no classes: send at least one text prompt", source="prompts")
    return call


def respond(call: PredictCall, image: Image, found: list[Prediction], seconds: float) -> PredictResponse:
    """The model's predictions as the native routes answer them: box centre and size in the image's pixels, one
    polygon (or RLE) per instance. Asked for its classes, a prediction's `class` is the class name (whatever
    prompt the model was trained to answer for it); asked with prompts, it is the prompt."""
    classes = call.model.classes
    by_class = asks_classes(call.options)
    mask_format = "rle" if call.output == "png" or call.visualize else call.options.mask_format
    predictions = []
    for p in found:
        x, y, w, h = p.bbox
        name = classes[p.prompt_index] if by_class else p.prompt
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
        time=round(seconds, 4),
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


def encode(call: PredictCall, image: Image, result: PredictResponse) -> tuple[bytes, str]:
    """The answer's body and media type, serialised once (FastAPI would validate a response model again)."""
    if call.output == "png":
        return draw.overlay(image, result, call.model.classes), "image/png"
    if call.output == "native":
        return result.model_dump_json(by_alias=True).encode(), "application/json"
    drawn = (
        visualization(image, result, call.model.classes, call.options.mask_format) if call.visualize else None
    )
    shaped = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    if drawn:
        shaped["visualization"] = drawn
    return json.dumps(shaped).encode(), "application/json"


async def answer(request: Request, settings: Settings, model: ModelSpec, visualize: bool) -> Response:
    """What both native predict routes answer: the request read and checked here, the prediction made by the
    inference tier (in this process, or a service this API forwards to)."""
    data, options = await read_predict(request, settings, visualize=visualize)
    call = PredictCall(model=model, options=options, output="png" if visualize else "native")
    found = await request.app.state.inference.predict(call, data)
    return found.response()
