"""What the OpenAPI document says of the routes that read their bodies by hand (app/models/bodies.py): FastAPI
sees no body parameter there, so without these the document showed none, and no client built from it could
call them."""

from __future__ import annotations

from typing import Any

from app.models.schemas import PredictJSON

# Predict takes either a multipart form or JSON with a base64 image.
PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "prompts": {"type": "array", "items": {"type": "string"}},
                        "confidence": {"type": "number", "default": 0.5},
                        "mask_format": {"type": "string", "enum": ["polygon", "rle"]},
                        "max_detections": {"type": "integer", "default": 100},
                        "boxes": {"type": "string", "description": "JSON: [[x0, y0, x1, y1], ...]"},
                    },
                }
            },
            "application/json": {"schema": PredictJSON.model_json_schema()},
        },
    }
}

PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "JSON, or the image with masks (?visualize=true)"}
}

# Roboflow's hosted-API form: a bare base64 body (any content type) and options in the query.
HOSTED_FORM: dict[str, Any] = {
    "parameters": [
        {"name": "api_key", "in": "query", "schema": {"type": "string"}, "description": "Or a Bearer header."},
        {"name": "confidence", "in": "query", "description": "With a multipart 'file': 0-100, a percentage (Roboflow's "
         "hosted API); with a base64 body: 0-1, or above 1 a percentage.",
         "schema": {"type": "number", "minimum": 0, "maximum": 100, "default": 40}},
        {"name": "max_detections", "in": "query", "description": "At most SAMTUNE_MAX_DETECTIONS (1000).",
         "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 300}},
        {"name": "response_mask_format", "in": "query", "schema": {"type": "string", "enum": ["polygon", "rle"]}},
    ],
    "requestBody": {
        "required": True,
        "description": "The image, base64-encoded (Roboflow's clients send it as x-www-form-urlencoded), or a "
        "multipart form with the image in a 'file' field (the `roboflow` package's model.predict).",
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                               "properties": {"file": {"type": "string", "format": "binary"}}}},
        },
    },
}  # fmt: skip
