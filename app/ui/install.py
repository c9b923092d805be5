"""Installs the web UI on the app: static files, vendor files, pages, the sign-in redirect."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.ui.api_docs import router as api_docs_router
from app.ui.auth import install_signin_redirect
from app.ui.router import router
from app.ui.runs import router as runs_router
from app.ui.vendor import router as vendor_router

STATIC_DIR = Path(__file__).parent / "static"


def install_ui(app: FastAPI) -> None:
    install_signin_redirect(app)
    # The vendor route first: the /static mount would otherwise answer /static/vendor/... with a 404.
    app.include_router(vendor_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(router)
    app.include_router(runs_router)
    app.include_router(api_docs_router)
