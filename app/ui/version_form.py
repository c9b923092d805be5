"""The version form, read off the `VersionSpec` pydantic models: every option with its default, bounds and
description, so the form cannot fall behind the API when an option is added."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from app.versions.schemas import VersionSpec

Kind = Literal["integer", "number", "bool", "choice", "class_map", "group"]

_LABELS = {
    "filter_null": "Leave out images without annotations (share)",
    "min_instance_px": "Drop instances smaller than (px)",
    "outputs_per_image": "Outputs per training image",
    "rotate90": "Rotate by multiples of 90°",
    "rotation_degrees": "Rotation (± degrees)",
    "blur_sigma": "Blur up to sigma (px)",
    "classes": "Classes: rename, merge or drop",
    "crop": "Random crop",
    "min_scale": "Smallest share of each side kept",
    "auto_orient": "Apply EXIF orientation",
}
_HINTS = {
    "split.train": "Used when the mode is ratio.",
    "split.valid": "Used when the mode is ratio.",
    "split.test": "Used when the mode is ratio.",
    "split.seed": "Used when the mode is ratio.",
    "augmentation.outputs_per_image": "1 = no augmentation; N = the original plus N-1 random copies. "
    "Only the train split is augmented.",
    "augmentation.contrast": "Random contrast factor within 1±N.",
    "augmentation.saturation": "Random saturation factor within 1±N.",
    "augmentation.hue": "Random hue shift within ±N (of a full turn).",
    "augmentation.seed": "The same seed gives the same copies.",
    "preprocessing.resize.width": "SAM 3 works at 1008×1008.",
}
_TITLES = {
    "preprocessing": "Preprocessing",
    "split": "Splits",
    "augmentation": "Augmentation",
    "resize": "Resize",
}


@dataclass
class FormField:
    path: str
    label: str
    kind: Kind
    default: Any = None
    hint: str = ""
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: list[str] = field(default_factory=list)
    optional: bool = False  # a group that may be left out (null), e.g. the random crop
    children: list[FormField] = field(default_factory=list)

    @property
    def dom_id(self) -> str:
        return "f-" + self.path.replace(".", "-").replace("_", "-")

    @property
    def step(self) -> str:
        if self.kind == "integer":
            return "1"
        return "0.01" if (self.maximum or 0) <= 1 else "0.1"


def _label(name: str) -> str:
    return _LABELS.get(name, name.replace("_", " ").capitalize())


def _bounds(info: FieldInfo) -> tuple[float | None, float | None, bool]:
    low = high = None
    exclusive = False
    for item in info.metadata:
        if getattr(item, "ge", None) is not None:
            low = item.ge
        if getattr(item, "gt", None) is not None:
            low, exclusive = item.gt, True
        if getattr(item, "le", None) is not None:
            high = item.le
        if getattr(item, "lt", None) is not None:
            high = item.lt
    return low, high, exclusive


def _model_in(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The pydantic model an annotation names, and whether it may be None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            return args[0], True
    return None, False


def _fields(model: type[BaseModel], instance: BaseModel | None, prefix: str) -> list[FormField]:
    out = []
    for name, info in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        annotation = info.annotation
        default = getattr(instance, name) if instance is not None else None
        hint = _HINTS.get(path, info.description or "")
        nested, optional = _model_in(annotation)
        if nested is not None:
            sample = default if default is not None else nested()
            out.append(
                FormField(
                    path,
                    _TITLES.get(name, _label(name)),
                    "group",
                    default=None if optional and default is None else "present",
                    hint=hint,
                    optional=optional,
                    children=_fields(nested, sample, path),
                )
            )
        elif annotation is bool:
            out.append(FormField(path, _label(name), "bool", default=default, hint=hint))
        elif typing.get_origin(annotation) is Literal:
            choices = [str(c) for c in typing.get_args(annotation)]
            out.append(FormField(path, _label(name), "choice", default=default, hint=hint, choices=choices))
        elif typing.get_origin(annotation) is dict:
            out.append(FormField(path, _label(name), "class_map", default=default, hint=hint))
        elif annotation in (int, float):
            low, high, exclusive = _bounds(info)
            kind: Kind = "integer" if annotation is int else "number"
            out.append(
                FormField(
                    path,
                    _label(name),
                    kind,
                    default=default,
                    hint=hint,
                    minimum=low,
                    maximum=high,
                    exclusive_minimum=exclusive,
                )
            )
        else:  # a new kind of option: fail loudly in the tests rather than leave it off the form
            raise TypeError(f"the version form cannot show {path} ({annotation!r})")
    return out


def version_form() -> list[FormField]:
    """One group per section of the spec (preprocessing, split, augmentation), defaults filled in."""
    return _fields(VersionSpec, VersionSpec(), "")


def form_paths(fields: list[FormField]) -> list[str]:
    """Every leaf option's dotted path (for tests: the form covers the whole spec)."""
    paths = []
    for f in fields:
        paths.extend(form_paths(f.children) if f.kind == "group" else [f.path])
    return paths
