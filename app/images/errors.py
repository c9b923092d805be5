"""The one error the image package raises."""

from __future__ import annotations

from app.core.errors import AppError


class InvalidImage(AppError):
    """The bytes are not an image we can use: not JPEG, PNG or WebP, damaged, or over the pixel
    limit. `source` names the file at fault. Callers with their own error family (ingest) wrap it."""

    status_code = 422
    kind = "invalid-image"
