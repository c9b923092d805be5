from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.core.deps import CurrentPrincipal, SessionDep, SettingsDep, StorageDep
from app.core.errors import AppError, NotFound, Unprocessable
from app.core.pagination import Page, PageDep
from app.datasets import health, preview, repository, service
from app.datasets.schemas import (
    AnnotationOut,
    DatasetCreate,
    DatasetOut,
    DatasetUpdate,
    Health,
    ImageDetail,
    ImageOut,
    UploadResult,
)
from app.datasets.tables import Image

router = APIRouter(prefix="/api/v1/datasets", tags=["datasets"])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "A zip: COCO, Roboflow COCO export, ODinW, or images only.",
                        },
                        "subset": {
                            "type": "string",
                            "description": "ODinW zips holding several subsets: the one to import.",
                        },
                    },
                }
            }
        },
    }
}


@router.post("", response_model=DatasetOut, status_code=status.HTTP_201_CREATED)
def create_dataset(body: DatasetCreate, session: SessionDep, principal: CurrentPrincipal) -> DatasetOut:
    dataset = service.create_dataset(session, principal.workspace_id, body.name)
    return service.describe(session, [dataset])[0]


@router.get("", response_model=Page[DatasetOut])
def list_datasets(session: SessionDep, principal: CurrentPrincipal, params: PageDep) -> Page[DatasetOut]:
    datasets, total = repository.page_for_workspace(session, principal.workspace_id, params)
    return params.page(service.describe(session, datasets), total)


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal) -> DatasetOut:
    return service.describe(session, [service.get_dataset(session, principal.workspace_id, dataset_id)])[0]


@router.patch("/{dataset_id}", response_model=DatasetOut)
def rename_dataset(
    dataset_id: uuid.UUID, body: DatasetUpdate, session: SessionDep, principal: CurrentPrincipal
) -> DatasetOut:
    dataset = service.rename_dataset(session, principal.workspace_id, dataset_id, body.name)
    return service.describe(session, [dataset])[0]


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset(
    dataset_id: uuid.UUID, session: SessionDep, storage: StorageDep, principal: CurrentPrincipal
) -> Response:
    service.delete_dataset(session, storage, principal.workspace_id, dataset_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{dataset_id}/uploads",
    response_model=UploadResult,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_UPLOAD_BODY,
    responses={413: {"description": "Upload or its unpacked content over the limits"}},
)
async def upload(
    dataset_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
) -> UploadResult:
    # Checked before the body is read, so a wrong id costs no upload.
    await run_in_threadpool(service.get_dataset, session, principal.workspace_id, dataset_id)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise AppError(
            "send the zip as multipart/form-data in a field named 'file' (curl -F file=@dataset.zip)",
            status_code=415,
        )
    # Starlette spools file parts to disk past 1 MiB, so memory stays flat however large the zip.
    try:
        form = await request.form(max_files=1, max_fields=5)
    except AppError:
        raise
    except Exception as exc:  # the multipart parser's own errors: a malformed body
        raise AppError(f"the multipart body could not be parsed: {exc}", status_code=400) from exc
    try:
        upload_file = form.get("file")
        if not isinstance(upload_file, UploadFile):
            raise Unprocessable("the multipart field 'file' with the zip is required", source="file")
        subset = form.get("subset")
        return await run_in_threadpool(
            service.upload_zip,
            session,
            storage,
            settings,
            principal.workspace_id,
            dataset_id,
            upload_file.file,
            subset=subset if isinstance(subset, str) and subset else None,
        )
    finally:
        await form.close()


@router.get("/{dataset_id}/health", response_model=Health)
def dataset_health(dataset_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal) -> Health:
    dataset = service.get_dataset(session, principal.workspace_id, dataset_id)
    return health.dataset_health(session, dataset.id)


@router.get("/{dataset_id}/images", response_model=Page[ImageOut])
def list_images(
    dataset_id: uuid.UUID,
    session: SessionDep,
    principal: CurrentPrincipal,
    params: PageDep,
    split: Annotated[str | None, Query(pattern="^(train|valid|test)$")] = None,
    class_name: Annotated[str | None, Query(alias="class", max_length=200)] = None,
) -> Page[ImageOut]:
    dataset = service.get_dataset(session, principal.workspace_id, dataset_id)
    category_id = None
    if class_name is not None:
        match = [c for c in repository.categories(session, dataset.id) if c.name == class_name]
        if not match:
            raise NotFound(f"dataset {dataset.name!r} has no class {class_name!r}")
        category_id = match[0].id
    images, total = repository.page_images(
        session, dataset.id, split=split, category_id=category_id, params=params
    )
    classes = repository.classes_per_image(session, [im.id for im in images])
    items = []
    for im in images:
        out = ImageOut.model_validate(im)
        out.annotation_count = sum(n for _, n in classes[im.id])
        out.classes = sorted(name for name, _ in classes[im.id])
        items.append(out)
    return params.page(items, total)


def _image(
    session: SessionDep, principal: CurrentPrincipal, dataset_id: uuid.UUID, image_id: uuid.UUID
) -> Image:
    dataset = service.get_dataset(session, principal.workspace_id, dataset_id)
    image = repository.get_image(session, dataset.id, image_id)
    if image is None:
        raise NotFound(f"image {image_id} not found in dataset {dataset.name!r}")
    return image


@router.get("/{dataset_id}/images/{image_id}", response_model=ImageDetail)
def get_image(
    dataset_id: uuid.UUID, image_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal
) -> ImageDetail:
    image = _image(session, principal, dataset_id, image_id)
    anns = repository.annotations_of(session, image.id)
    detail = ImageDetail.model_validate(
        {
            **ImageOut.model_validate(image).model_dump(),
            "annotation_count": len(anns),
            "classes": sorted({c.name for _, c in anns}),
            "annotations": [
                AnnotationOut(
                    id=a.id,
                    class_name=c.name,
                    class_id=c.position,
                    bbox=a.bbox,
                    segmentation=a.segmentation,
                    area=a.area,
                    iscrowd=a.iscrowd,
                )
                for a, c in anns
            ],
        }
    )
    return detail


_MEDIA = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


@router.get(
    "/{dataset_id}/images/{image_id}/file",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}},
)
def image_file(
    dataset_id: uuid.UUID,
    image_id: uuid.UUID,
    session: SessionDep,
    storage: StorageDep,
    principal: CurrentPrincipal,
) -> Response:
    image = _image(session, principal, dataset_id, image_id)
    return Response(storage.get_bytes(image.object_key), media_type=_MEDIA[image.format])


@router.get(
    "/{dataset_id}/images/{image_id}/preview.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def image_preview(
    dataset_id: uuid.UUID,
    image_id: uuid.UUID,
    session: SessionDep,
    storage: StorageDep,
    principal: CurrentPrincipal,
    max_side: Annotated[int, Query(ge=32, le=2048)] = 1024,
) -> Response:
    image = _image(session, principal, dataset_id, image_id)
    anns = [(c.position, a.bbox, a.segmentation) for a, c in repository.annotations_of(session, image.id)]
    png = preview.render_preview(storage.get_bytes(image.object_key), anns, max_side=max_side)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})
