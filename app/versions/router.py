from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import StreamingResponse

from app.core.deps import CurrentPrincipal, SessionDep, SettingsDep, StorageDep, TasksDep
from app.core.pagination import Page, PageDep
from app.datasets import service as datasets
from app.versions import preview, repository, service
from app.versions.schemas import VersionOut, VersionSpec

router = APIRouter(tags=["versions"])


@router.get(
    "/api/v1/versions/defaults",
    summary="Default version spec",
    operation_id="get_version_defaults",
    response_model=VersionSpec,
)
def version_defaults() -> VersionSpec:
    """Every field of a version spec (preprocessing, split, augmentation) with its default; send any subset to
    `POST /api/v1/datasets/{dataset_id}/versions`. Needs no key: it is the same for everyone."""
    return VersionSpec()


@router.post(
    "/api/v1/datasets/{dataset_id}/versions",
    summary="Create a version",
    response_model=VersionOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={422: {"description": "Invalid spec, unknown class name, or a dataset without images"}},
)
def create_version(
    dataset_id: uuid.UUID,
    session: SessionDep,
    tasks: TasksDep,
    principal: CurrentPrincipal,
    spec: VersionSpec | None = None,
) -> VersionOut:
    """Freeze the dataset as it is now, with this spec (every field optional; see `GET
    /api/v1/versions/defaults`). Answers 202 at once with status `building`; a worker builds the snapshot,
    then the version reads `ready` (or `failed`, with `error`). 404 for a dataset not in your workspace; 422
    for an invalid spec, an unknown class name or a dataset without images."""
    version, dataset = service.create_version(
        session, tasks, principal.workspace_id, dataset_id, spec or VersionSpec()
    )
    return service.describe(version, dataset)


@router.post(
    "/api/v1/datasets/{dataset_id}/versions/preview",
    summary="Preview a version",
    response_model=preview.VersionPreview,
    responses={422: {"description": "Invalid spec, unknown class name, or a dataset without images"}},
)
def preview_version(
    dataset_id: uuid.UUID,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    spec: VersionSpec | None = None,
    images: Annotated[int, Query(ge=1, le=8, description="Source images to show")] = 3,
) -> preview.VersionPreview:
    """What a version with this spec would hold, before building it: the first `images` training images
    resized, with up to 3 augmented copies each and their annotations, as small JPEG data URLs. Creates
    nothing. 404 for a dataset not in your workspace; 422 as for creating the version."""
    return preview.preview_version(
        session, storage, settings, principal.workspace_id, dataset_id, spec or VersionSpec(), images
    )


@router.get(
    "/api/v1/datasets/{dataset_id}/versions",
    summary="List a dataset's versions",
    description="The versions of a dataset, numbered 1, 2, 3..., each with its status and counts. 404 for a dataset not in your workspace.",
    response_model=Page[VersionOut],
)
def list_versions(
    dataset_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal, params: PageDep
) -> Page[VersionOut]:
    dataset = datasets.get_dataset(session, principal.workspace_id, dataset_id)
    versions, total = repository.page_for_dataset(session, dataset.id, params)
    return params.page([service.describe(v, dataset) for v in versions], total)


@router.get("/api/v1/versions/{version_id}", summary="Get a version", response_model=VersionOut)
def get_version(version_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal) -> VersionOut:
    """A version's status and build progress, spec, classes, counts per split, dropped instances and content
    hash. 404 when it is not in your workspace."""
    return service.describe(*service.get_version(session, principal.workspace_id, version_id))


@router.delete(
    "/api/v1/versions/{version_id}", summary="Delete a version", status_code=status.HTTP_204_NO_CONTENT
)
def delete_version(
    version_id: uuid.UUID, session: SessionDep, storage: StorageDep, principal: CurrentPrincipal
) -> Response:
    """Delete a version and its snapshot (the files stay while a twin version shares them). 204. 404 when it
    is not in your workspace; 409 while a training job or a model uses it."""
    service.delete_version(session, storage, principal.workspace_id, version_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/api/v1/versions/{version_id}/export",
    summary="Export a version as a COCO zip",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}, 409: {"description": "The version is not ready"}},
)
def export_version(
    version_id: uuid.UUID, session: SessionDep, storage: StorageDep, principal: CurrentPrincipal
) -> StreamingResponse:
    """The snapshot as a zip (streamed) in Roboflow's COCO export layout:
    `{train,valid,test}/_annotations.coco.json` with the images beside them; it uploads back into a dataset as
    it is. 404 when it is not in your workspace; 409 unless it is ready."""
    version, dataset = service.get_version(session, principal.workspace_id, version_id)
    body = service.export_stream(storage, version)
    filename = f"{dataset.slug}-v{version.number}-coco.zip"
    return StreamingResponse(
        body,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
