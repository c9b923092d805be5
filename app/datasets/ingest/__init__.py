"""Turn an uploaded zip into validated, staged images and normalised annotations.

A pure library: no database, HTTP or object storage. `ingest_zip` either returns everything
the upload holds, fully validated, or raises `IngestError` with a status and a detail a person
can act on.
"""

from .errors import IngestError
from .models import SPLITS, IngestLimits, ParsedAnnotation, ParsedUpload, StagedImage
from .pipeline import ingest_zip

__all__ = [
    "SPLITS",
    "IngestError",
    "IngestLimits",
    "ParsedAnnotation",
    "ParsedUpload",
    "StagedImage",
    "ingest_zip",
]
