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


@router.post("", summary="Create a dataset", response_model=DatasetOut, status_code=status.HTTP_201_CREATED)
def create_dataset(body: DatasetCreate, session: SessionDep, principal: CurrentPrincipal) -> DatasetOut:
    """An empty dataset named `name`. Its `slug`, part of every Roboflow-style model id (`slug/N`), is derived
    from the name (with `-2`, `-3`... when taken) and never changes. 201 with the dataset. 422 for a blank or
    overlong name."""
    dataset = service.create_dataset(session, principal.workspace_id, body.name)
    return service.describe(session, [dataset])[0]


@router.get(
    "",
    summary="List datasets",
    description="Your workspace's datasets, each with its classes and image counts per split.",
    response_model=Page[DatasetOut],
)
def list_datasets(session: SessionDep, principal: CurrentPrincipal, params: PageDep) -> Page[DatasetOut]:
    datasets, total = repository.page_for_workspace(session, principal.workspace_id, params)
    return params.page(service.describe(session, datasets), total)


@router.get("/{dataset_id}", summary="Get a dataset", response_model=DatasetOut)
def get_dataset(dataset_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal) -> DatasetOut:
    """One dataset with its classes and image counts per split. 404 when it is not in your workspace."""
    return service.describe(session, [service.get_dataset(session, principal.workspace_id, dataset_id)])[0]


@router.patch("/{dataset_id}", summary="Rename a dataset", response_model=DatasetOut)
def rename_dataset(
    dataset_id: uuid.UUID, body: DatasetUpdate, session: SessionDep, principal: CurrentPrincipal
) -> DatasetOut:
    """Give a dataset a new `name`; its slug stays, since model ids handed out name it. Answers the dataset.
    404 when it is not in your workspace, 422 for a blank or overlong name."""
    dataset = service.rename_dataset(session, principal.workspace_id, dataset_id, body.name)
    return service.describe(session, [dataset])[0]


@router.delete("/{dataset_id}", summary="Delete a dataset", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset(
    dataset_id: uuid.UUID, session: SessionDep, storage: StorageDep, principal: CurrentPrincipal
) -> Response:
    """Delete a dataset with its images, versions and their files in object storage (removed after the
    deletion commits). 204. 404 when it is not in your workspace; 409 while a training job uses one of its
    versions."""
    service.delete_dataset(session, storage, principal.workspace_id, dataset_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{dataset_id}/uploads",
    summary="Upload a zip of images and annotations",
    operation_id="upload_dataset_zip",
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
    """Add the images and annotations of a zip (multipart field `file`): COCO, a Roboflow COCO export, ODinW
    (pick one with `subset`) or images only; the layout is detected. Classes merge by name; an image already
    in the dataset (same SHA-256) is skipped. 201 with what was added per split, the classes found and
    warnings. Nothing is stored unless all of it is valid: 400 unsafe or damaged zip, 413 body or unpacked
    content over the limits, 415 not multipart, 422 invalid annotations or images (`source` names the file at
    fault)."""
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


@router.get(
    "/{dataset_id}/health", summary="Dataset health", operation_id="get_dataset_health", response_model=Health
)
def dataset_health(dataset_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal) -> Health:
    """Statistics to check a dataset before training: images per split, the class distribution, image sizes,
    images without annotations, instances per image, instances under 4 px at 1008x1008, and warnings. 404 when
    the dataset is not in your workspace."""
    dataset = service.get_dataset(session, principal.workspace_id, dataset_id)
    return health.dataset_health(session, dataset.id)


@router.get(
    "/{dataset_id}/images",
    summary="List a dataset's images",
    description="A page of images (`limit`, `offset`; `{items, total, limit, offset}`), optionally only one `split` or one `class`, each with its size, split and classes. 404 for a dataset not in your workspace or a class it does not have.",
    response_model=Page[ImageOut],
)
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


@router.get(
    "/{dataset_id}/images/{image_id}", summary="Get an image with its annotations", response_model=ImageDetail
)
def get_image(
    dataset_id: uuid.UUID, image_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal
) -> ImageDetail:
    """One image's metadata and every annotation on it (class, box, segmentation, area). 404 when the image is
    not in this dataset of your workspace."""
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
    summary="Download an image",
    operation_id="get_image_file",
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
    """The original image file as uploaded (JPEG, PNG or WebP). 404 when the image is not in this dataset of
    your workspace."""
    image = _image(session, principal, dataset_id, image_id)
    return Response(storage.get_bytes(image.object_key), media_type=_MEDIA[image.format])


@router.get(
    "/{dataset_id}/images/{image_id}/preview.png",
    summary="Preview an image with its masks",
    operation_id="get_image_preview",
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
    """A PNG of the image scaled to at most `max_side` pixels, with its masks and boxes drawn in class
    colours. 404 when the image is not in this dataset of your workspace."""
    image = _image(session, principal, dataset_id, image_id)
    anns = [(c.position, a.bbox, a.segmentation) for a, c in repository.annotations_of(session, image.id)]
    png = preview.render_preview(storage.get_bytes(image.object_key), anns, max_side=max_side)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})
