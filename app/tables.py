"""Imports every table so that `Base.metadata` is complete (Alembic, tests)."""

from app.core.db import Base
from app.datasets.tables import Annotation, Category, Dataset, Image
from app.jobs.tables import JobEvent, Metric, TrainingJob
from app.keys.tables import ApiKey
from app.models.tables import BatchPrediction, Model
from app.ui.tables import EndedSession
from app.versions.tables import DatasetVersion
from app.workers.tables import Worker
from app.workspaces.tables import Workspace

__all__ = [
    "Annotation",
    "ApiKey",
    "BatchPrediction",
    "Base",
    "Category",
    "Dataset",
    "DatasetVersion",
    "EndedSession",
    "Image",
    "JobEvent",
    "Metric",
    "Model",
    "TrainingJob",
    "Worker",
    "Workspace",
]
