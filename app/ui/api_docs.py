"""The interactive API reference at /docs: Swagger UI from node_modules (npm ci), not from a CDN, so it works
on a machine without internet and under the UI's Content-Security-Policy (its start-up script is a file here,
not inline)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.ui.templating import render

router = APIRouter(include_in_schema=False)


@router.get("/docs", response_class=HTMLResponse)
def api_docs(request: Request) -> HTMLResponse:
    return render(request, "api_docs.html", None, openapi_url=request.app.openapi_url)
