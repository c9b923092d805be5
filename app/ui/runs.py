"""Pages for training, jobs, models and comparison.

PLACEHOLDER owned by helper ui-B, who replaces this module and its templates; it exists so that the
navigation of the foundation has somewhere to go.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.ui.auth import PageUser
from app.ui.templating import render

router = APIRouter(include_in_schema=False)

_TITLES = {"train": "Train", "jobs": "Jobs", "models": "Models", "compare": "Compare runs"}


@router.get("/train")
def train_page(request: Request, user: PageUser) -> Response:
    return render(request, "placeholder.html", user, nav="train", title=_TITLES["train"])


@router.get("/jobs")
def jobs_page(request: Request, user: PageUser) -> Response:
    return render(request, "placeholder.html", user, nav="jobs", title=_TITLES["jobs"])


@router.get("/models")
def models_page(request: Request, user: PageUser) -> Response:
    return render(request, "placeholder.html", user, nav="models", title=_TITLES["models"])


@router.get("/compare")
def compare_page(request: Request, user: PageUser) -> Response:
    return render(request, "placeholder.html", user, nav="compare", title=_TITLES["compare"])
