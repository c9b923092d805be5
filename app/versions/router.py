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


@router.get("/api/v1/versions/defaults", response_model=VersionSpec)
def version_defaults() -> VersionSpec:
    """Every field of a version spec with its default; send any subset to `POST .../versions`."""
    return VersionSpec()


@router.post(
    "/api/v1/datasets/{dataset_id}/versions",
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
    """Freeze the dataset as it is now. Answers at once with status `building`; a worker builds the snapshot."""
    version, dataset = service.create_version(
        session, tasks, principal.workspace_id, dataset_id, spec or VersionSpec()
    )
    return service.describe(version, dataset)


@router.post(
    "/api/v1/datasets/{dataset_id}/versions/preview",
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
    """What a version with this spec would hold, before building it: the first few training images
    resized, with up to 3 augmented copies each and their annotations. Creates nothing."""
    return preview.preview_version(
        session, storage, settings, principal.workspace_id, dataset_id, spec or VersionSpec(), images
    )


@router.get("/api/v1/datasets/{dataset_id}/versions", response_model=Page[VersionOut])
def list_versions(
    dataset_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal, params: PageDep
) -> Page[VersionOut]:
    dataset = datasets.get_dataset(session, principal.workspace_id, dataset_id)
    versions, total = repository.page_for_dataset(session, dataset.id, params)
    return params.page([service.describe(v, dataset) for v in versions], total)


@router.get("/api/v1/versions/{version_id}", response_model=VersionOut)
def get_version(version_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal) -> VersionOut:
    return service.describe(*service.get_version(session, principal.workspace_id, version_id))


@router.delete("/api/v1/versions/{version_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_version(
    version_id: uuid.UUID, session: SessionDep, storage: StorageDep, principal: CurrentPrincipal
) -> Response:
    service.delete_version(session, storage, principal.workspace_id, version_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/api/v1/versions/{version_id}/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}, 409: {"description": "The version is not ready"}},
)
def export_version(
    version_id: uuid.UUID, session: SessionDep, storage: StorageDep, principal: CurrentPrincipal
) -> StreamingResponse:
    """The snapshot as a zip in Roboflow's COCO export layout; it uploads back into a dataset as it is."""
    version, dataset = service.get_version(session, principal.workspace_id, version_id)
    body = service.export_stream(storage, version)
    filename = f"{dataset.slug}-v{version.number}-coco.zip"
    return StreamingResponse(
        body,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
