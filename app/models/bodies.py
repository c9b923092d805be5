"""Predict requests read by hand: the native route takes multipart or JSON on one path, and Roboflow's
clients send base64 in shapes FastAPI cannot declare (a bare body of any content type, options in the query).
Every error names the field at fault (`source`)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import QueryParams
from starlette.datastructures import UploadFile as StarletteUpload

from app.core.errors import AppError, PayloadTooLarge, Unprocessable
from app.models.schemas import PredictJSON, PredictOptions


def _invalid(exc: ValidationError) -> Unprocessable:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "body"
    return Unprocessable(f"{field}: {err['msg']}", source=field)


async def read_predict(request: Request, max_bytes: int) -> tuple[bytes, PredictOptions]:
    """The image and options of a native predict request: multipart (an `image` file) or JSON (base64)."""
    data, options = await _read(request, max_bytes)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the image is larger than {max_bytes} bytes", source="image")
    if not data:
        raise Unprocessable("image: the file is empty", source="image")
    return data, options


async def _read(request: Request, max_bytes: int) -> tuple[bytes, PredictOptions]:
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("image")
        if not isinstance(upload, StarletteUpload):
            raise Unprocessable("image: send the image as a file field named 'image'", source="image")
        data = await upload.read(max_bytes + 1)  # one byte more tells "too large" from "exactly the limit"
        raw: dict[str, Any] = {
            k: form.get(k) for k in ("confidence", "mask_format", "max_detections") if k in form
        }
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


def roboflow_image(value: str, max_bytes: int) -> bytes:
    """A Roboflow client's base64 image. A URL is refused, not fetched: fetching what a client names is SSRF."""
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
        raise AppError(f"the image is larger than {max_bytes} bytes", status_code=413, source="image")
    return data


@dataclass(frozen=True)
class HostedOptions:
    confidence: float
    max_detections: int
    mask_format: str


def hosted_options(params: QueryParams) -> HostedOptions:
    """The options of Roboflow's hosted-API form, from the query; confidence may be a percentage (theirs)."""
    try:
        confidence = float(params.get("confidence", 40))
        max_detections = int(params.get("max_detections", 300))
    except ValueError:
        raise Unprocessable("confidence and max_detections must be numbers") from None
    # The same bounds as the JSON routes (nan, inf, negatives and huge counts were accepted here).
    if not 0 <= confidence <= 100:
        raise Unprocessable(f"confidence {confidence} is not in 0-1 (or 0-100, percent)", source="confidence")
    if not 1 <= max_detections <= 1000:
        raise Unprocessable(f"max_detections {max_detections} is not in 1-1000", source="max_detections")
    confidence /= 100 if confidence > 1 else 1
    mask_format = "rle" if params.get("response_mask_format") == "rle" else "polygon"
    return HostedOptions(confidence, max_detections, mask_format)
