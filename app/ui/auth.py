"""Pages need a signed-in user: `PageUser` gives it, or sends the browser to the sign-in page."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import RedirectResponse

from app.core.deps import SessionDep
from app.ui.session import SESSION_COOKIE, UiSession, load_ui_session


class SignInRequired(Exception):
    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def current_user(request: Request, session: SessionDep) -> UiSession | None:
    return load_ui_session(
        session, request.app.state.settings.signing_key, request.cookies.get(SESSION_COOKIE)
    )


def require_user(request: Request, session: SessionDep) -> UiSession:
    user = current_user(request, session)
    if user is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(path)
    return user


OptionalUser = Annotated[UiSession | None, Depends(current_user)]
PageUser = Annotated[UiSession, Depends(require_user)]


def safe_next(path: str | None) -> str:
    """Only a path on this site: an open redirect to another host would make a phishing link look like ours."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def install_signin_redirect(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    async def _to_signin(_: Request, exc: SignInRequired) -> RedirectResponse:
        target = "/signin" if exc.next_path in ("", "/") else f"/signin?next={quote(exc.next_path, safe='/')}"
        return RedirectResponse(target, status_code=303)
