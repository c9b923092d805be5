"""Jinja2 templates and the one way pages render them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from app.ui.session import UiSession

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def render(
    request: Request,
    template: str,
    user: UiSession | None,
    *,
    nav: str = "",
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """`nav` names the navigation entry to mark as current; `user` gives the page its CSRF token."""
    return templates.TemplateResponse(
        request,
        template,
        {"user": user, "nav": nav, "csrf_token": user.csrf if user else "", **context},
        status_code=status_code,
        headers={"Cache-Control": "no-store"},
    )
