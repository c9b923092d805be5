"""Roboflow's REST API paths, as the `roboflow` package calls them with `API_URL` pointed here. Thin: the key's
workspace, then app/roboflow_api/service.py.

Registered after every samtune route (app/main.py), so `/datasets`, `/api/v1/...` and the other fixed paths are
matched first; the words they start with cannot be workspace names (app/workspaces/service.RESERVED_NAMES).
Errors are problem+json with Roboflow's `{"error": {"message": ...}}` member added, which is what the SDK
reads (rfapi.upload_image, save_annotation, Project.generate_version); no error repeats the query string, where
the SDK puts the key."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute, APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.routing import Match
from starlette.types import Scope

from app.core.deps import (
    AUTH_SCHEMES,
    BearerKey,
    QueryKey,
    SessionDep,
    SettingsDep,
    StorageDep,
    TasksDep,
    presented_key,
)
from app.core.errors import AppError, Unprocessable
from app.core.limits import checked_principal
from app.core.openapi import roboflow_operation_id
from app.keys import service as keys
from app.keys.service import Principal
from app.roboflow_api import links, service
from app.roboflow_api.schemas import Annotate, CreateProject, TrainBody
from app.workspaces.service import RESERVED_NAMES


def _roboflow_error(exc: AppError) -> AppError:
    exc.extra = {**exc.extra, "error": {"message": exc.detail, "type": exc.title or type(exc).__name__}}
    return exc


class RoboflowRoute(APIRoute):
    """A route whose errors also carry Roboflow's `error` member (rendered by app/core/errors.py as ever), and
    that does not match a path whose workspace is a reserved word: `/api/v1/nothing`, `/datasets/x/y` and the
    like answer exactly as they would without these routes (404, or 405 where a page has that path)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        workspace = child.get("path_params", {}).get("workspace") if match != Match.NONE else None
        if workspace is not None and workspace.lower() in RESERVED_NAMES:
            return Match.NONE, {}
        return match, child

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except AppError as exc:
                raise _roboflow_error(exc) from None
            except RequestValidationError as exc:
                err = exc.errors()[0]
                field = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
                raise _roboflow_error(Unprocessable(f"{field}: {err.get('msg')}", source=field)) from None

        return handle


router = APIRouter(
    tags=["roboflow REST API"], route_class=RoboflowRoute, generate_unique_id_function=roboflow_operation_id
)


def caller(
    request: Request, session: SessionDep, _bearer: BearerKey = None, _api_key: QueryKey = None
) -> Principal:
    """The key's principal. Roboflow's clients send the key as `?api_key=`; the web UI's cookie is not taken.
    The two schemes are declared for the OpenAPI document (app/core/deps.py); presented_key reads the key."""
    key = presented_key(request)
    checked = checked_principal(request.scope, key)
    if checked is not None:
        return checked  # KeyBeforeBody checked this very key moments ago
    return keys.authenticate(session, key)


Caller = Annotated[Principal, Depends(caller)]


@router.post("/", summary="Roboflow: check the key")
def check_key(session: SessionDep, principal: Caller) -> dict[str, Any]:
    """What `Roboflow(api_key=...)` calls: the key is valid, and which workspace it opens. 401 otherwise."""
    workspace = service.workspace_of(session, principal.workspace_id)
    return {"welcome": "samtune: Roboflow-compatible API", "workspace": workspace.name}


@router.get("/{workspace}", summary="Roboflow: get the workspace")
def get_workspace(workspace: str, session: SessionDep, principal: Caller) -> dict[str, Any]:
    """The key's workspace with its projects (datasets), as `rf.workspace()` reads it. 404 when `workspace` is
    not the key's own."""
    return service.workspace_json(session, service.workspace_of(session, principal.workspace_id, workspace))


@router.post("/{workspace}/projects", summary="Roboflow: create a project")
def create_project(
    workspace: str, body: CreateProject, session: SessionDep, principal: Caller
) -> dict[str, Any]:
    """A project is a dataset (instance segmentation only); answers the project as `GET
    /{workspace}/{project}` shows it. 404 for another workspace; 422 for another project type or a bad
    name."""
    ws = service.workspace_of(session, principal.workspace_id, workspace)
    return service.create_project(session, ws, body)


@router.get("/{workspace}/{project}", summary="Roboflow: get a project")
def get_project(workspace: str, project: str, session: SessionDep, principal: Caller) -> dict[str, Any]:
    """A project (dataset) with its versions, as `workspace.project(name)` reads it. 404 for another workspace
    or an unknown project."""
    ws = service.workspace_of(session, principal.workspace_id, workspace)
    return service.project_with_versions(session, ws, service.project(session, ws.id, project))


UPLOAD_FORM: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary"}, "name": {"type": "string"},
                           "split": {"type": "string", "enum": ["train", "valid", "test"]}},
        }}},
    }
}  # fmt: skip


@router.post("/dataset/{project}/upload", summary="Roboflow: upload an image", openapi_extra=UPLOAD_FORM)
async def upload_image(
    project: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    principal: Caller,
    image: Annotated[str | None, Query(max_length=2000, description="A hosted image's URL: refused.")] = None,
) -> dict[str, Any]:
    """One image (multipart `file`, with `name` and `split`), as `project.upload` and `upload_dataset` send
    it; `{success: true, id}`, or `{duplicate: true, id}` for an image the project already has. 400 for a
    hosted image URL (never fetched), 404 unknown project, 413, 422 not an image."""
    if image is not None:
        raise AppError(
            "hosted images (?image=URL) are not fetched by this server; upload the file", source="image"
        )
    dataset = await run_in_threadpool(service.project, session, principal.workspace_id, project)
    try:
        form = await request.form(max_files=1, max_fields=8)
    except Exception as exc:  # Starlette's refusal of a malformed or oversized form
        raise Unprocessable(
            f"the multipart form was refused: {getattr(exc, 'detail', exc)}", source="body"
        ) from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise Unprocessable("file: send the image as a multipart file field named 'file'", source="file")
    name = str(form.get("name") or upload.filename or "")[:500]
    split = str(form.get("split") or "train")
    return await run_in_threadpool(
        service.upload_image, session, storage, settings, dataset, upload.file, name=name, split=split
    )


@router.post("/dataset/{project}/annotate/{image_id}", summary="Roboflow: annotate an image")
def annotate_image(
    project: str,
    image_id: str,
    body: Annotate,
    session: SessionDep,
    settings: SettingsDep,
    principal: Caller,
    name: Annotated[str, Query(max_length=500)] = "annotation.coco.json",
    overwrite: bool = False,
) -> dict[str, Any]:
    """An uploaded image's annotations, as COCO text (the file's one image, or the one named like the image);
    `overwrite` replaces earlier ones. 404 unknown project or image, 409 already annotated, 422 invalid COCO
    or past SAMTUNE_MAX_CLASSES."""
    dataset = service.project(session, principal.workspace_id, project)
    return service.annotate(session, dataset, image_id, name=name, text=body.annotationFile, overwrite=overwrite,
                            max_classes=settings.max_classes)  # fmt: skip


@router.post("/{workspace}/{project}/generate", summary="Roboflow: generate a version")
def generate_version(
    workspace: str,
    project: str,
    body: dict[str, Any],
    session: SessionDep,
    tasks: TasksDep,
    principal: Caller,
) -> dict[str, Any]:
    """A version from Roboflow's preprocessing and augmentation settings; built by a worker, as any version:
    `GET /{workspace}/{project}/{n}` says `generating` until it is ready. 404 unknown project; 422 for
    settings samtune does not support."""
    ws = service.workspace_of(session, principal.workspace_id, workspace)
    return service.generate(session, tasks, ws, service.project(session, ws.id, project), body)


@router.get("/{workspace}/{project}/{version}", summary="Roboflow: get a version")
def get_version(
    workspace: str, project: str, version: str, session: SessionDep, principal: Caller
) -> dict[str, Any]:
    """The version, its build progress, its training (`train`) and its model, as `version.train()` polls it.
    404 unknown project or version."""
    ws = service.workspace_of(session, principal.workspace_id, workspace)
    dataset = service.project(session, ws.id, project)
    return service.one_version(session, ws, dataset, service.version_of(session, dataset, version))


@router.post("/{workspace}/{project}/{version}/train", summary="Roboflow: train a version")
def train_version(
    workspace: str, project: str, version: str, request: Request, session: SessionDep, settings: SettingsDep,
    tasks: TasksDep, principal: Caller, body: TrainBody | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A training job on the version, with samtune's automatic hyperparameters (`epochs` overrides theirs).
    404 unknown project or version; 422 as for creating a job (a version not ready, say)."""
    ws = service.workspace_of(session, principal.workspace_id, workspace)
    dataset = service.project(session, ws.id, project)
    found = service.version_of(session, dataset, version)
    return service.train(session, settings, tasks, request.app.state.publisher, ws, dataset, found,
                         body or TrainBody())  # fmt: skip


@router.get(
    "/{workspace}/{project}/{version}/{export_format}", summary="Roboflow: export a version",
    responses={202: {"description": "The version is still being built: {ready: false, progress}",
                     "content": {"application/json": {}}}},
)  # fmt: skip
def export_version(
    workspace: str, project: str, version: str, export_format: str, request: Request, session: SessionDep,
    settings: SettingsDep, principal: Caller,
) -> Response:  # fmt: skip
    """202 with the build's progress while the version is being built, then 200 with a link to the COCO zip
    (`{export: {format, link}}`). The link carries a signed token for this version (valid an hour), not the
    key. 404 unknown project or version; 400 for a format other than COCO; 409 when its build failed."""
    ws = service.workspace_of(session, principal.workspace_id, workspace)
    dataset = service.project(session, ws.id, project)
    found = service.version_of(session, dataset, version)
    if not service.export_check(found, dataset, export_format):
        return JSONResponse({"ready": False, "progress": round(found.progress, 4)}, status_code=202)
    token = links.issue(settings.signing_key, found.id)
    link = str(request.url_for("download_export", workspace=workspace, project=project, version=version,
                               export_format=export_format).include_query_params(token=token))  # fmt: skip
    return JSONResponse({"export": {"format": export_format, "link": link}})


@router.get(
    "/{workspace}/{project}/{version}/{export_format}/zip",
    summary="Roboflow: download an export",
    name="download_export",
    dependencies=AUTH_SCHEMES,  # the link's token or the key, checked in the handler
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}, 409: {"description": "The version is not ready"}},
)
def download_export(
    workspace: str, project: str, version: str, export_format: str, request: Request, session: SessionDep,
    settings: SettingsDep, storage: StorageDep,
    token: Annotated[str | None, Query(max_length=300, description="From the export's link; or send the key.")] = None,
) -> StreamingResponse:  # fmt: skip
    """The COCO zip of a ready version, with its Content-Length (the SDK needs it). Either the export link's
    `token` or the key. 401 for an invalid or expired token; 409 while the version is being built."""
    if token is not None:
        # The token names its version: the path must name that same version, else the link is simply invalid.
        found, dataset = service.linked_version(session, links.verify(settings.signing_key, token),
                                                workspace, project, version)  # fmt: skip
    else:
        ws = service.workspace_of(session, caller(request, session).workspace_id, workspace)
        dataset = service.project(session, ws.id, project)
        found = service.version_of(session, dataset, version)
    if not service.export_check(found, dataset, export_format):
        raise AppError(
            f"version {found.number} is still being built; ask for the export again", status_code=409
        )
    chunks, length = service.export_zip(storage, found)
    filename = f"{dataset.slug}-{found.number}-coco.zip"
    return StreamingResponse(chunks, media_type="application/zip", headers={
        "Content-Length": str(length), "Content-Disposition": f'attachment; filename="{filename}"'})  # fmt: skip
