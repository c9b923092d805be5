"""HTML pages for signing in and out, keys, datasets and versions. Each page is a template plus a script
that reads and writes through the REST API; the routes here only check the session and pass ids along."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.core.deps import SessionDep, SettingsDep
from app.core.errors import Unauthorized
from app.keys import service as keys
from app.ui import session as ui_session
from app.ui.auth import OptionalUser, PageUser, safe_next
from app.ui.templating import render
from app.ui.version_form import version_form

router = APIRouter(include_in_schema=False)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _signin_page(request: Request, settings: SettingsDep, *, next_path: str, error: str = "") -> Response:
    # A refused sign-in answers 200 with the form and the reason, as login forms do: the page is a
    # correct answer to "show me the form again", and a 4xx document is logged as a console error.
    nonce = ui_session.new_signin_nonce()
    response = render(
        request,
        "signin.html",
        None,
        error=error,
        next_path=next_path,
        signin_token=ui_session.signin_token(settings.signing_key, nonce),
    )
    response.set_cookie(
        ui_session.SIGNIN_COOKIE,
        nonce,
        max_age=ui_session.SIGNIN_SECONDS,
        path="/signin",
        httponly=True,
        samesite="lax",
        secure=_secure(request),
    )
    return response


@router.get("/signin")
def signin_form(
    request: Request, settings: SettingsDep, user: OptionalUser, next: str | None = None
) -> Response:
    if user is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _signin_page(request, settings, next_path=safe_next(next))


@router.post("/signin")
def signin(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    api_key: Annotated[str, Form(max_length=500)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    next_path = safe_next(next)
    nonce = request.cookies.get(ui_session.SIGNIN_COOKIE, "")
    expected = ui_session.signin_token(settings.signing_key, nonce) if nonce else ""
    if not nonce or not ui_session.csrf_matches_plain(expected, csrf_token):
        return _signin_page(
            request,
            settings,
            next_path=next_path,
            error="The sign-in form had expired (or cookies are blocked). Paste your key again.",
        )
    if not api_key.strip():
        return _signin_page(request, settings, next_path=next_path, error="Paste an API key to sign in.")
    try:
        principal = keys.authenticate(session, api_key)
    except Unauthorized as exc:
        return _signin_page(request, settings, next_path=next_path, error=f"Sign-in failed: {exc.detail}.")
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        ui_session.SESSION_COOKIE,
        ui_session.issue_session(settings.signing_key, principal.key_id),
        max_age=ui_session.SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="lax",
        secure=_secure(request),
    )
    response.delete_cookie(ui_session.SIGNIN_COOKIE, path="/signin")
    return response


@router.post("/signout")
def signout(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    cookie = request.cookies.get(ui_session.SESSION_COOKIE)
    # Without the token another site could sign the visitor out; an invalid session has nothing to end.
    if cookie and not ui_session.csrf_matches(settings.signing_key, cookie, csrf_token):
        return RedirectResponse("/", status_code=303)
    if cookie:
        ui_session.end_session(session, settings.signing_key, cookie)  # on the server, not only the browser
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(ui_session.SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response


@router.get("/")
def home(request: Request, user: PageUser) -> Response:
    return render(request, "datasets.html", user, nav="datasets")


@router.get("/datasets")
def datasets_page(request: Request, user: PageUser) -> Response:
    return render(request, "datasets.html", user, nav="datasets")


@router.get("/datasets/{dataset_id}")
def dataset_page(request: Request, dataset_id: uuid.UUID, user: PageUser) -> Response:
    return render(request, "dataset.html", user, nav="datasets", dataset_id=dataset_id)


@router.get("/datasets/{dataset_id}/versions/new")
def version_form_page(request: Request, dataset_id: uuid.UUID, user: PageUser) -> Response:
    return render(
        request, "version_new.html", user, nav="datasets", dataset_id=dataset_id, form=version_form()
    )


@router.get("/versions/{version_id}")
def version_page(request: Request, version_id: uuid.UUID, user: PageUser) -> Response:
    return render(request, "version.html", user, nav="datasets", version_id=version_id)


@router.get("/keys")
def keys_page(request: Request, user: PageUser) -> Response:
    return render(request, "keys.html", user, nav="keys")
