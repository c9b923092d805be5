"""What a prediction asks, in plain values that travel from the API to an inference service: the model (where
its files are, its classes), the request's options, and what shape the answer takes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from fastapi import Response
from pydantic import BaseModel, ConfigDict

from app.core.errors import AppError
from app.models.schemas import PredictOptions

# native: the native routes' JSON; png: ?visualize=true's drawing; roboflow: the JSON Roboflow's inference
# server answers (no null fields, a base64 JPEG `visualization` when asked).
Output = Literal["native", "png", "roboflow"]


class ModelSpec(BaseModel):
    """A model as an inference service needs it: a fine-tuned model's stored files (checked by their sha256), or
    a base model by name. `key` names it in the service's model cache."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    classes: list[str]  # what it finds when no prompt is given; class_id is the index here
    model_id: uuid.UUID | None = None
    prefix: str | None = None
    sha256: str | None = None
    base_name: str | None = None


class PredictCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelSpec
    options: PredictOptions
    output: Output = "native"
    visualize: bool = False  # roboflow output: add the drawing


@dataclass(frozen=True)
class Answer:
    """A prediction's HTTP answer, as computed here or relayed from an inference service (errors included)."""

    body: bytes
    media_type: str
    timing: str = ""  # a Server-Timing header value
    status: int = 200

    def response(self) -> Response:
        headers = {"Server-Timing": self.timing} if self.timing else {}
        return Response(self.body, status_code=self.status, media_type=self.media_type, headers=headers)


class InferenceUnavailable(AppError):
    status_code = 503
    kind = "inference-unavailable"


# The body of an internal predict call: the call as one line of JSON, then the image's bytes as sent. JSON
# escapes newlines inside strings, so the first b"\n" ends the call; the image travels without base64.
def encode_call(call: PredictCall, image: bytes) -> bytes:
    return call.model_dump_json().encode() + b"\n" + image


def decode_call(body: bytes) -> tuple[PredictCall, bytes]:
    head, sep, image = body.partition(b"\n")
    if not sep:
        raise AppError("an internal predict call is one line of JSON, a newline, then the image")
    return PredictCall.model_validate_json(head), image
