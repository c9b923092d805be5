"""Pages for training, jobs, models and comparing runs. Like the other pages, each is a template plus a
script that reads and writes through the REST API; the routes only check the session and pass ids along."""

from __future__ import annotations

import json
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.jobs.service import OVERRIDABLE
from app.ui.auth import PageUser
from app.ui.templating import render

router = APIRouter(include_in_schema=False)


@router.get("/train")
def train_page(
    request: Request,
    user: PageUser,
    version_id: Annotated[str, Query(max_length=100)] = "",
    base_model: Annotated[str, Query(max_length=300)] = "",
) -> Response:
    # The version (and the base model: a catalog name or a model id, the model page's "Train from this model")
    # is only preselected when it is one the page lists (the script says so otherwise), so a stale or
    # mistyped link still opens the form. The settable names come from the
    # service, so the form offers exactly what the API accepts.
    return render(
        request,
        "train.html",
        user,
        nav="train",
        version_id=version_id,
        base_model=base_model,
        overridable=json.dumps(sorted(OVERRIDABLE)),
    )


@router.get("/jobs")
def jobs_page(request: Request, user: PageUser) -> Response:
    return render(request, "jobs.html", user, nav="jobs")


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: uuid.UUID, user: PageUser) -> Response:
    return render(request, "job.html", user, nav="jobs", job_id=job_id)


@router.get("/models")
def models_page(request: Request, user: PageUser) -> Response:
    return render(request, "models.html", user, nav="models")


@router.get("/models/{model_id}")
def model_page(request: Request, model_id: uuid.UUID, user: PageUser) -> Response:
    return render(request, "model.html", user, nav="models", model_id=model_id)


@router.get("/compare")
def compare_page(request: Request, user: PageUser) -> Response:
    return render(request, "compare.html", user, nav="compare")
