"""COCO annotation files: the schema we accept, parsing, and the cross-reference checks.

The models ignore fields they do not use (licenses, info, keypoints...) so real-world exports
load, but they are strict about the fields they do use, and errors carry the JSON location.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeInt,
    PositiveInt,
    StringConstraints,
    Tag,
    ValidationError,
    field_validator,
)

from .errors import InvalidContent
from .models import MAX_NAME_CHARS

CocoId = int | str
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
ClassName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_NAME_CHARS)]
_MAX_REPORTED_ERRORS = 3


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, frozen=True)


class RleSegmentation(_Model):
    size: tuple[PositiveInt, PositiveInt]  # height, width
    counts: list[NonNegativeInt] | str


def _segmentation_kind(value: Any) -> str:
    return "rle" if isinstance(value, dict) else "polygon"


Segmentation = Annotated[
    Annotated[list[list[float]], Tag("polygon")] | Annotated[RleSegmentation, Tag("rle")],
    Discriminator(_segmentation_kind),
]


class CocoImage(_Model):
    id: CocoId
    file_name: Name
    width: int | None = None
    height: int | None = None

    @property
    def declared_size(self) -> tuple[int, int] | None:
        """(width, height) when the file states a usable one."""
        if self.width and self.height and self.width > 0 and self.height > 0:
            return (self.width, self.height)
        return None


class CocoAnnotation(_Model):
    id: CocoId
    image_id: CocoId
    category_id: CocoId
    bbox: tuple[float, float, float, float] | None = None
    segmentation: Segmentation | None = None
    area: float | None = None
    iscrowd: bool = False

    @field_validator("bbox", mode="before")
    @classmethod
    def _bbox_shape(cls, value: Any) -> Any:
        # Several exporters write [] for "no box".
        if value == []:
            return None
        if isinstance(value, list | tuple) and len(value) != 4:
            raise ValueError(f"bbox must be [x, y, width, height], got {len(value)} numbers")
        return value

    @field_validator("segmentation", mode="before")
    @classmethod
    def _segmentation_shape(cls, value: Any) -> Any:
        # [] means "box only" (Roboflow); a flat list of numbers is a single-part polygon.
        if value is None or value == []:
            return None
        if isinstance(value, list) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        ):
            return [value]
        return value

    @field_validator("iscrowd", mode="before")
    @classmethod
    def _iscrowd_flag(cls, value: Any) -> Any:
        if value not in (0, 1, True, False):
            raise ValueError("iscrowd must be 0 or 1")
        return value


class CocoCategory(_Model):
    id: CocoId
    name: ClassName
    supercategory: str | None = None


class CocoFile(_Model):
    images: list[CocoImage]
    annotations: list[CocoAnnotation] = Field(default_factory=list)
    categories: list[CocoCategory] = Field(default_factory=list)


def id_key(value: CocoId) -> str:
    """Ids are compared as text so that 7 and "7" refer to the same thing."""
    return str(value)


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("polygon", "rle", "str") or "[" in part:
            continue  # union and discriminator tags are noise to a person reading the error
        else:
            out += f".{part}" if out else str(part)
    return out or "top level"


def _message(msg: str) -> str:
    for prefix in ("Value error, ", "Invalid JSON: "):
        msg = msg.removeprefix(prefix)
    return msg


def parse_coco(data: bytes | bytearray, source: str) -> CocoFile:
    """Parse and schema-check one annotation file; errors name the file and the JSON location."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte order mark, as Windows editors write
    try:
        return CocoFile.model_validate_json(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors and errors[0]["type"] == "json_invalid":
            raise InvalidContent(
                f"{source} is not valid JSON: {_message(errors[0]['msg'])}", source=source
            ) from exc
        shown = "; ".join(
            f"{_location(e['loc'])}: {_message(e['msg'])}" for e in errors[:_MAX_REPORTED_ERRORS]
        )
        more = len(errors) - _MAX_REPORTED_ERRORS
        if more > 0:
            shown += f" (and {more} more problems)"
        raise InvalidContent(f"{source} is not a COCO annotation file: {shown}", source=source) from exc


@dataclass
class CocoIndex:
    images: dict[str, CocoImage]
    categories: dict[str, CocoCategory]
    annotations_by_image: dict[str, list[CocoAnnotation]]


def index_coco(doc: CocoFile, source: str) -> CocoIndex:
    """Check that ids are unique and every annotation points at an image and category in the file."""
    images: dict[str, CocoImage] = {}
    for image in doc.images:
        key = id_key(image.id)
        if key in images:
            raise InvalidContent(f"{source}: image id {image.id!r} is used twice", source=source)
        images[key] = image
    categories: dict[str, CocoCategory] = {}
    for category in doc.categories:
        key = id_key(category.id)
        if key in categories:
            raise InvalidContent(f"{source}: category id {category.id!r} is used twice", source=source)
        categories[key] = category
    by_image: dict[str, list[CocoAnnotation]] = {key: [] for key in images}
    for ann in doc.annotations:
        image_key = id_key(ann.image_id)
        if image_key not in images:
            raise InvalidContent(
                f"{source}: annotation {ann.id!r} points at image_id {ann.image_id!r}, "
                "which is not in the file",
                source=source,
            )
        if id_key(ann.category_id) not in categories:
            raise InvalidContent(
                f"{source}: annotation {ann.id!r} has category_id {ann.category_id!r}, "
                "which is not in the file's categories",
                source=source,
            )
        by_image[image_key].append(ann)
    return CocoIndex(images, categories, by_image)
