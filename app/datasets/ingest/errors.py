"""Errors raised while ingesting an upload.

Every failure is an `IngestError`; the three subclasses only fix the HTTP status so that call
sites read as the kind of problem they report (unsafe archive, too big, bad content).
"""

from __future__ import annotations

from app.core.errors import AppError


class IngestError(AppError):
    """The upload cannot be ingested. `detail` says what to fix, `source` names the zip entry or
    annotation file at fault."""

    status_code = 422
    kind = "invalid-upload"


class UnsafeArchive(IngestError):
    """The archive itself is malformed or unsafe to unpack (not a zip, corrupt, path traversal...)."""

    status_code = 400
    kind = "unsafe-archive"


class ArchiveTooLarge(IngestError):
    """A size limit was hit; counted on bytes actually decompressed, so lying headers do not help."""

    status_code = 413
    kind = "archive-too-large"


class InvalidContent(IngestError):
    """The archive is fine but what is inside is not a usable dataset."""

    status_code = 422
