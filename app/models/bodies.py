"""Predict requests read by hand: the native route takes multipart or JSON on one path, and Roboflow's
clients send base64 in shapes FastAPI cannot declare (a bare body of any content type, options in the query).
Every error names the field at fault (`source`)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import FormData, QueryParams
from starlette.datastructures import UploadFile as StarletteUpload
from starlette.exceptions import HTTPException

from app.core.errors import AppError, PayloadTooLarge, Unprocessable
from app.images.decode import image_size
from app.models.schemas import PredictJSON, PredictOptions
from app.settings import Settings

# The options a multipart request sends as plain form fields (prompts and boxes are read apart).
MULTIPART_OPTIONS = ("confidence", "mask_format", "max_detections", "iou_threshold", "class_agnostic_nms")


# Fields whose schema bound is a setting's ceiling: a refusal by the schema names the setting too.
BOUNDED_BY_SETTING = {"max_detections": "SAMTUNE_MAX_DETECTIONS"}


def _invalid(exc: ValidationError) -> Unprocessable:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "body"
    setting = BOUNDED_BY_SETTING.get(field)
    limit = (
        f" ({setting} sets the limit, at most 1000)" if setting and err["type"] == "less_than_equal" else ""
    )
    return Unprocessable(f"{field}: {err['msg']}{limit}", source=field)


async def read_predict(
    request: Request, settings: Settings, *, visualize: bool = False
) -> tuple[bytes, PredictOptions]:
    """The image and options of a native predict request: multipart (an `image` file) or JSON (base64), within
    the limits of `settings` (each refusal names its setting). The image's size is read from its header here,
    so a request over a limit is refused before it waits for the inference thread."""
    max_bytes = settings.max_predict_bytes
    data, options = await _read(
        request, max_bytes, max_fields=settings.max_prompts + len(MULTIPART_OPTIONS) + 2
    )
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"the image is larger than {max_bytes} bytes (SAMTUNE_MAX_PREDICT_BYTES)", source="image"
        )
    if not data:
        raise Unprocessable("image: the file is empty", source="image")
    check_prompts(options.prompts, settings, source="prompts")
    if options.boxes is not None and len(options.boxes) > settings.max_boxes:
        raise Unprocessable(f"boxes: {len(options.boxes)} boxes is more than the limit of {settings.max_boxes} "
                            "(SAMTUNE_MAX_BOXES)", source="boxes")  # fmt: skip
    if "max_detections" in options.model_fields_set:
        check_max_detections(options.max_detections, settings)
    else:  # the default, under a limit set lower than it
        options.max_detections = min(options.max_detections, settings.max_detections)
    check_image(data, settings, visualize=visualize)
    return data, options


def check_prompts(prompts: list[str] | None, settings: Settings, *, source: str) -> None:
    """Every prompt is a forward pass's worth of work (and memory) on the one inference thread."""
    if prompts is None:
        return
    if len(prompts) > settings.max_prompts:
        raise Unprocessable(f"{source}: {len(prompts)} prompts is more than the limit of {settings.max_prompts} "
                            "(SAMTUNE_MAX_PROMPTS)", source=source)  # fmt: skip
    for i, prompt in enumerate(prompts):
        if len(prompt) > settings.max_prompt_chars:
            raise Unprocessable(f"{source}: prompt {i} has {len(prompt)} characters, more than the limit of "
                                f"{settings.max_prompt_chars} (SAMTUNE_MAX_PROMPT_CHARS)", source=source)  # fmt: skip


def check_max_detections(value: int, settings: Settings) -> None:
    if value > settings.max_detections:
        raise Unprocessable(f"max_detections {value} is more than the limit of {settings.max_detections} "
                            "(SAMTUNE_MAX_DETECTIONS)", source="max_detections")  # fmt: skip


def check_image(data: bytes, settings: Settings, *, visualize: bool) -> None:
    """The image's pixels from its header (nothing decoded): within SAMTUNE_MAX_IMAGE_PIXELS, and, when it is to
    be drawn on, within SAMTUNE_MAX_VISUALIZE_PIXELS (drawing decodes every mask at full size)."""
    width, height = image_size(data, max_pixels=settings.max_image_pixels)
    if visualize and width * height > settings.max_visualize_pixels:
        raise Unprocessable(f"visualize: the image is {width}x{height} px, more than the limit of "
                            f"{settings.max_visualize_pixels} px for a drawn answer (SAMTUNE_MAX_VISUALIZE_PIXELS);"
                            " ask for JSON, or send a smaller image", source="visualize")  # fmt: skip


async def _form(request: Request, max_fields: int) -> FormData:
    """The multipart form, its parts counted while it is parsed. A part that should be text but came as a file is
    refused by name (str() of it was the text `UploadFile(filename=...)`)."""
    try:
        # A few files more than the one image are let through so the offending field can be named below.
        form = await request.form(max_files=4, max_fields=max_fields)
    except HTTPException as exc:  # Starlette's answer to a malformed or oversized form
        if exc.status_code != 400:
            raise
        raise Unprocessable(f"the multipart form was refused: {exc.detail} (at most SAMTUNE_MAX_PROMPTS prompts, "
                            "one 'image' file)", source="body") from None  # fmt: skip
    for name, value in form.multi_items():
        if name != "image" and not isinstance(value, str):
            raise Unprocessable(f"{name}: send it as a text field, not a file", source=name)
    return form


async def _read(request: Request, max_bytes: int, *, max_fields: int) -> tuple[bytes, PredictOptions]:
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        form = await _form(request, max_fields)
        upload = form.get("image")
        if not isinstance(upload, StarletteUpload):
            raise Unprocessable("image: send the image as a file field named 'image'", source="image")
        data = await upload.read(max_bytes + 1)  # one byte more tells "too large" from "exactly the limit"
        raw: dict[str, Any] = {k: form.get(k) for k in MULTIPART_OPTIONS if k in form}
        if "prompts" in form:
            raw["prompts"] = [str(v) for v in form.getlist("prompts")]
        if "boxes" in form:
            try:
                raw["boxes"] = json.loads(str(form.get("boxes")))
            except ValueError:
                raise Unprocessable("boxes: not JSON; send [[x0, y0, x1, y1], ...]", source="boxes") from None
        try:
            return data, PredictOptions.model_validate(raw)
        except ValidationError as exc:
            raise _invalid(exc) from None
    if kind.startswith("application/json"):
        try:
            body = PredictJSON.model_validate_json(await request.body())
        except ValidationError as exc:
            raise _invalid(exc) from None
        value = body.image.partition(",")[2] if body.image.startswith("data:") else body.image
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise Unprocessable("image: not valid base64", source="image") from None
        return data, PredictOptions(**body.model_dump(exclude={"image"}))
    raise AppError("send multipart/form-data (an 'image' file) or application/json (a base64 'image')",
                   status_code=415)  # fmt: skip


def roboflow_image(value: str, settings: Settings, *, visualize: bool = False) -> bytes:
    """A Roboflow client's base64 image, within the image limits (check_image). A URL is refused, not fetched:
    fetching what a client names is SSRF."""
    max_bytes = settings.max_predict_bytes
    if value.startswith(("http://", "https://")):
        raise AppError("image URLs are not fetched by this server; send the image as base64", status_code=400,
                       source="image")  # fmt: skip
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        data = base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError):
        raise AppError("image is not valid base64", status_code=400, source="image") from None
    if len(data) > max_bytes:
        raise AppError(f"the image is larger than {max_bytes} bytes (SAMTUNE_MAX_PREDICT_BYTES)", status_code=413,
                       source="image")  # fmt: skip
    check_image(data, settings, visualize=visualize)
    return data


@dataclass(frozen=True)
class HostedOptions:
    confidence: float
    max_detections: int
    mask_format: Literal["polygon", "rle"]
    iou_threshold: float = 0.5
    class_agnostic_nms: bool = False
    visualize_predictions: bool = False


def hosted_options(params: QueryParams, settings: Settings, *, percent: bool = False) -> HostedOptions:
    """The options of Roboflow's hosted-API form, from the query. Confidence is a percentage with `percent` (the
    hosted API's multipart form), else a fraction up to 1 and a percentage above (its inference server's)."""
    try:
        confidence = float(params.get("confidence", 40))
        max_detections = int(params.get("max_detections", min(300, settings.max_detections)))
    except ValueError:
        raise Unprocessable("confidence and max_detections must be numbers") from None
    # The same bounds as the JSON routes (nan, inf, negatives and huge counts were accepted here).
    if not 0 <= confidence <= 100:
        raise Unprocessable(f"confidence {confidence} is not in 0-1 (or 0-100, percent)", source="confidence")
    if max_detections < 1:
        raise Unprocessable(f"max_detections {max_detections} is not at least 1", source="max_detections")
    check_max_detections(max_detections, settings)
    confidence /= 100 if percent or confidence > 1 else 1
    mask_format: Literal["polygon", "rle"] = (
        "rle" if params.get("response_mask_format") == "rle" else "polygon"
    )
    # Roboflow's hosted API calls the NMS threshold `overlap`, often in percent (30); its v1 name works too.
    try:
        overlap = float(params.get("overlap", params.get("iou_threshold", 0.5)))
    except ValueError:
        raise Unprocessable("overlap (iou_threshold) must be a number", source="overlap") from None
    if not 0 < overlap <= 100:
        raise Unprocessable(f"overlap {overlap} is not in (0, 1] (or percent)", source="overlap")
    overlap /= 100 if overlap > 1 else 1
    return HostedOptions(confidence, max_detections, mask_format, overlap,
                         _flag(params, "class_agnostic_nms"), _flag(params, "visualize_predictions"))  # fmt: skip


async def hosted_file(request: Request, settings: Settings, *, visualize: bool) -> bytes:
    """The image of the hosted API's multipart form: one file field named `file`, within the image limits."""
    try:
        form = await request.form(max_files=1, max_fields=4)
    except HTTPException as exc:
        if exc.status_code != 400:
            raise
        raise Unprocessable(
            f"the multipart form was refused: {exc.detail} (one 'file' field)", source="body"
        ) from None
    upload = form.get("file")
    if not isinstance(upload, StarletteUpload):
        raise Unprocessable("file: send the image as a multipart file field named 'file'", source="file")
    data = await upload.read(settings.max_predict_bytes + 1)
    if len(data) > settings.max_predict_bytes:
        raise PayloadTooLarge(f"the image is larger than {settings.max_predict_bytes} bytes "
                              "(SAMTUNE_MAX_PREDICT_BYTES)", source="file")  # fmt: skip
    if not data:
        raise Unprocessable("file: the image is empty", source="file")
    check_image(data, settings, visualize=visualize)
    return data


def _flag(params: QueryParams, name: str) -> bool:
    return params.get(name, "false").strip().lower() in ("1", "true", "yes", "on")
